-- A schema-version-2 store as autolabel 2 wrote it (commit ffc04a4: sync.store API calls, then
-- sqlite3 iterdump): a pre-label run (a box and a mask), a CVAT task link with its labels, frames,
-- a job, two pushed shapes (CVAT shape ids 1 and 2) and a human revision linked to shape 1.
-- tests/test_tags_store.py upgrades it to the current schema.
BEGIN TRANSACTION;
CREATE TABLE annotations (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	sample_id BIGINT NOT NULL, 
	label VARCHAR(255) NOT NULL, 
	x1 DOUBLE NOT NULL, 
	y1 DOUBLE NOT NULL, 
	x2 DOUBLE NOT NULL, 
	y2 DOUBLE NOT NULL, 
	shape_type VARCHAR(16) NOT NULL, 
	score DOUBLE, 
	polygon JSON, 
	mask_rle JSON, 
	attributes JSON, 
	source VARCHAR(32) NOT NULL, 
	cvat_shape_id BIGINT, 
	pre_annotation_id INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT fk_annotations_run_sample FOREIGN KEY(run_id, sample_id) REFERENCES run_samples (run_id, sample_id), 
	CONSTRAINT ck_annotations_shape_type CHECK (shape_type IN ('rectangle', 'polygon', 'mask')), 
	CONSTRAINT ck_annotations_box CHECK (x2 >= x1 AND y2 >= y1), 
	CONSTRAINT ck_annotations_score CHECK (score IS NULL OR (score >= 0 AND score <= 1)), 
	FOREIGN KEY(pre_annotation_id) REFERENCES annotations (id)
);
INSERT INTO "annotations" VALUES(1,1,1,'car',1.0,2.0,10.0,12.0,'rectangle',8.99999976158142089843e-01,NULL,NULL,NULL,'auto',NULL,NULL);
INSERT INTO "annotations" VALUES(2,1,2,'cup',5.0,4.0,12.0,10.0,'mask',0.699999988079071,NULL,'{"size":[24,32],"counts":"l36b000000000000l>"}',NULL,'auto',NULL,NULL);
INSERT INTO "annotations" VALUES(3,2,1,'car',1.0,2.0,10.0,12.0,'rectangle',NULL,NULL,NULL,NULL,'auto',1,1);
INSERT INTO "annotations" VALUES(4,2,1,'car',0.0,0.0,5.0,5.0,'rectangle',NULL,NULL,NULL,NULL,'manual',3,NULL);
CREATE TABLE cvat_frames (
	task_link_id INTEGER NOT NULL, 
	frame INTEGER NOT NULL, 
	sample_id INTEGER NOT NULL, 
	PRIMARY KEY (task_link_id, frame), 
	CONSTRAINT uq_cvat_frames_task_sample UNIQUE (task_link_id, sample_id), 
	FOREIGN KEY(task_link_id) REFERENCES cvat_tasks (id), 
	FOREIGN KEY(sample_id) REFERENCES samples (id)
);
INSERT INTO "cvat_frames" VALUES(1,0,1);
INSERT INTO "cvat_frames" VALUES(1,1,2);
CREATE TABLE cvat_jobs (
	id INTEGER NOT NULL, 
	task_link_id INTEGER NOT NULL, 
	job_id BIGINT NOT NULL, 
	start_frame INTEGER NOT NULL, 
	stop_frame INTEGER NOT NULL, 
	assignee VARCHAR(255), 
	stage VARCHAR(64), 
	state VARCHAR(64), 
	updated_date DATETIME, 
	last_pulled_at DATETIME, 
	last_pulled_updated_date DATETIME, 
	last_revision_id INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_cvat_jobs_task_job UNIQUE (task_link_id, job_id), 
	FOREIGN KEY(task_link_id) REFERENCES cvat_tasks (id), 
	FOREIGN KEY(last_revision_id) REFERENCES runs (id)
);
INSERT INTO "cvat_jobs" VALUES(1,1,5,0,1,'alice','annotation','new','2026-01-03 00:00:00.000000','2026-12-06 23:57:10.094227','2026-01-03 00:00:00.000000',2);
CREATE TABLE cvat_tasks (
	id INTEGER NOT NULL, 
	dataset_id INTEGER NOT NULL, 
	server TEXT NOT NULL, 
	task_id BIGINT NOT NULL, 
	name TEXT NOT NULL, 
	project_id BIGINT, 
	run_id INTEGER, 
	created_at DATETIME NOT NULL, 
	labels JSON, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_cvat_tasks_server_task UNIQUE (server, task_id), 
	FOREIGN KEY(dataset_id) REFERENCES datasets (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id)
);
INSERT INTO "cvat_tasks" VALUES(1,1,'https://cvat.example',7,'t',NULL,1,'2026-12-06 23:57:09.922117','{"11": {"name": "car", "type": "rectangle"}, "12": {"name": "cup", "type": "mask"}}');
CREATE TABLE datasets (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
INSERT INTO "datasets" VALUES(1,'site','2026-12-06 23:57:09.401934');
CREATE TABLE pushed_shapes (
	task_link_id INTEGER NOT NULL, 
	cvat_shape_id BIGINT NOT NULL, 
	annotation_id INTEGER NOT NULL, 
	job_id BIGINT, 
	shape_type VARCHAR(16), 
	points JSON, 
	PRIMARY KEY (task_link_id, cvat_shape_id), 
	CONSTRAINT uq_pushed_shapes_task_annotation UNIQUE (task_link_id, annotation_id), 
	FOREIGN KEY(task_link_id) REFERENCES cvat_tasks (id), 
	FOREIGN KEY(annotation_id) REFERENCES annotations (id)
);
INSERT INTO "pushed_shapes" VALUES(1,1,1,5,'rectangle','[1.0, 2.0, 10.0, 12.0]');
INSERT INTO "pushed_shapes" VALUES(1,2,2,5,'mask','[0.0, 7.0, 5.0, 4.0, 11.0, 9.0]');
CREATE TABLE run_samples (
	run_id INTEGER NOT NULL, 
	sample_id INTEGER NOT NULL, 
	PRIMARY KEY (run_id, sample_id), 
	FOREIGN KEY(run_id) REFERENCES runs (id), 
	FOREIGN KEY(sample_id) REFERENCES samples (id)
);
INSERT INTO "run_samples" VALUES(1,1);
INSERT INTO "run_samples" VALUES(1,2);
INSERT INTO "run_samples" VALUES(2,1);
INSERT INTO "run_samples" VALUES(2,2);
CREATE TABLE runs (
	id INTEGER NOT NULL, 
	dataset_id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	created_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	parent_run_id INTEGER, 
	model_id TEXT, 
	model_revision VARCHAR(255), 
	ontology_yaml TEXT, 
	ontology_hash VARCHAR(128), 
	thresholds JSON, 
	params JSON, 
	cvat_server TEXT, 
	cvat_task_id BIGINT, 
	cvat_job_id BIGINT, 
	assignee VARCHAR(255), 
	stage VARCHAR(64), 
	state VARCHAR(64), 
	cvat_updated_date DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_runs_dataset_name UNIQUE (dataset_id, name), 
	CONSTRAINT ck_runs_kind CHECK (kind IN ('prelabel', 'human', 'import')), 
	FOREIGN KEY(dataset_id) REFERENCES datasets (id), 
	FOREIGN KEY(parent_run_id) REFERENCES runs (id)
);
INSERT INTO "runs" VALUES(1,1,'prelabel-1','prelabel','2026-12-06 23:57:09.514676','2026-12-06 23:57:09.865879',NULL,'grounding-dino:tiny',NULL,NULL,NULL,NULL,'{"threshold": 0.3}',NULL,NULL,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "runs" VALUES(2,1,'job5-rev1','human','2026-12-06 23:57:10.094227','2026-12-06 23:57:10.094227',1,NULL,NULL,NULL,NULL,NULL,NULL,'https://cvat.example',7,5,'alice','annotation','new','2026-01-03 00:00:00.000000');
CREATE TABLE samples (
	id INTEGER NOT NULL, 
	dataset_id INTEGER NOT NULL, 
	uri TEXT NOT NULL, 
	content_hash VARCHAR(128), 
	width INTEGER NOT NULL, 
	height INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_samples_dataset_uri UNIQUE (dataset_id, uri), 
	CONSTRAINT ck_samples_size CHECK (width > 0 AND height > 0), 
	FOREIGN KEY(dataset_id) REFERENCES datasets (id)
);
INSERT INTO "samples" VALUES(1,1,'/data/a.png','sha256:aa',32,24);
INSERT INTO "samples" VALUES(2,1,'/data/b.png','sha256:bb',32,24);
CREATE TABLE store_meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "store_meta" VALUES('schema_version','2');
CREATE INDEX ix_samples_dataset_id ON samples (dataset_id);
CREATE INDEX ix_runs_dataset_kind ON runs (dataset_id, kind);
CREATE INDEX ix_runs_cvat_job ON runs (cvat_server, cvat_task_id, cvat_job_id);
CREATE INDEX ix_run_samples_sample_id ON run_samples (sample_id);
CREATE INDEX ix_cvat_tasks_dataset_id ON cvat_tasks (dataset_id);
CREATE INDEX ix_annotations_cvat_shape ON annotations (cvat_shape_id);
CREATE INDEX ix_annotations_run_sample ON annotations (run_id, sample_id);
CREATE INDEX ix_cvat_frames_sample_id ON cvat_frames (sample_id);
COMMIT;
