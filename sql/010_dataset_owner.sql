-- A dataset's owning group (catalog projection; DatasetOwnerChanged): a member's table may write
-- to it only when the table belongs to that group. NULL: the groups whose tables it holds.
ALTER TABLE catalog_datasets ADD COLUMN owner_group text;
