"""The catalog: table commands, dependency state, lineage, apply/folder planning."""
