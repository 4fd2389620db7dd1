"""Git: the catalog as a repository, both ways (docs/git.md)."""
