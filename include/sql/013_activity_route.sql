-- the activity log says per flow what came from where and went where (issue 9): the source and target systems
ALTER TABLE tillflow.activity ADD COLUMN source text NOT NULL DEFAULT '';
ALTER TABLE tillflow.activity ADD COLUMN target text NOT NULL DEFAULT '';
