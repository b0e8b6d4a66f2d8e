-- revision 0024
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE crawl_tasks (
	task_id VARCHAR(32) NOT NULL, 
	project VARCHAR(200) NOT NULL, 
	url TEXT NOT NULL, 
	host VARCHAR(300) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	priority INTEGER DEFAULT 0 NOT NULL, 
	depth INTEGER DEFAULT 0 NOT NULL, 
	callback VARCHAR(200) DEFAULT 'parse' NOT NULL, 
	fetch JSON, 
	data JSON, 
	age INTEGER, 
	itag VARCHAR(200), 
	retries_left INTEGER DEFAULT 0 NOT NULL, 
	next_run_at DOUBLE NOT NULL, 
	queued_at DOUBLE, 
	deadline_at DOUBLE, 
	dispatch_count INTEGER DEFAULT 0 NOT NULL, 
	status_code INTEGER, 
	error TEXT, 
	final_url TEXT, 
	etag VARCHAR(500), 
	last_modified VARCHAR(100), 
	fetched_at DOUBLE, 
	created_at DOUBLE NOT NULL, 
	updated_at DOUBLE NOT NULL, auto_recrawl BOOLEAN DEFAULT 0 NOT NULL, error_kind VARCHAR(32), timeouts INTEGER DEFAULT '0' NOT NULL, resends INTEGER DEFAULT 0 NOT NULL, crashes INTEGER DEFAULT 0 NOT NULL, held_by VARCHAR(300), 
	PRIMARY KEY (task_id)
);

CREATE INDEX ix_crawl_tasks_due ON crawl_tasks (project, priority DESC, next_run_at) WHERE status = 'pending';

CREATE INDEX ix_crawl_tasks_stale ON crawl_tasks (deadline_at) WHERE status = 'queued';

CREATE TABLE results (
	task_id VARCHAR(32) NOT NULL, 
	item_index INTEGER NOT NULL, 
	project VARCHAR(200) NOT NULL, 
	url TEXT NOT NULL, 
	item JSON NOT NULL, 
	created_at DOUBLE NOT NULL, 
	updated_at DOUBLE NOT NULL, 
	PRIMARY KEY (task_id, item_index)
);

CREATE INDEX ix_results_project ON results (project, task_id);

CREATE TABLE screenshots (
	task_id VARCHAR(32) NOT NULL, 
	project VARCHAR(200) NOT NULL, 
	url TEXT NOT NULL, 
	png BLOB NOT NULL, 
	created_at DOUBLE NOT NULL, 
	PRIMARY KEY (task_id)
);

CREATE INDEX ix_screenshots_project ON screenshots (project, task_id);

CREATE TABLE render_workers (
	worker VARCHAR(300) NOT NULL, 
	hostname VARCHAR(200) NOT NULL, 
	pid INTEGER NOT NULL, 
	browser_pid INTEGER, 
	browsers_launched INTEGER DEFAULT 0 NOT NULL, 
	pages_rendered BIGINT DEFAULT 0 NOT NULL, 
	render_failures BIGINT DEFAULT 0 NOT NULL, 
	recycles INTEGER DEFAULT 0 NOT NULL, 
	crashes INTEGER DEFAULT 0 NOT NULL, 
	hung_kills INTEGER DEFAULT 0 NOT NULL, 
	browser_pss_bytes BIGINT, 
	browser_rss_bytes BIGINT, 
	started_at DOUBLE NOT NULL, 
	updated_at DOUBLE NOT NULL, refused_requests BIGINT DEFAULT 0 NOT NULL, 
	PRIMARY KEY (worker)
);

CREATE TABLE hosts (
	host VARCHAR(300) NOT NULL, 
	robots_status VARCHAR(16) DEFAULT 'unknown' NOT NULL, 
	robots_body TEXT, 
	crawl_delay DOUBLE, 
	robots_fetched_at DOUBLE, 
	robots_expires_at DOUBLE, 
	blocked_until DOUBLE, 
	updated_at DOUBLE NOT NULL, robots_failures INTEGER DEFAULT '0' NOT NULL, robots_error TEXT, robots_note TEXT, 
	PRIMARY KEY (host)
);

CREATE TABLE scheduler_lease (
	name VARCHAR(100) NOT NULL, 
	holder VARCHAR(300) NOT NULL, 
	token BIGINT NOT NULL, 
	expires_at DOUBLE NOT NULL, 
	updated_at DOUBLE NOT NULL, broker_run_id VARCHAR(100), 
	PRIMARY KEY (name)
);

CREATE TABLE project_timers (
	project VARCHAR(200) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	interval_seconds DOUBLE NOT NULL, 
	last_run_at DOUBLE, 
	created_at DOUBLE NOT NULL, 
	PRIMARY KEY (project, name)
);

CREATE TABLE "projects" (
	name VARCHAR(200) NOT NULL, 
	spider VARCHAR(500) NOT NULL, 
	status VARCHAR(16) DEFAULT 'running' NOT NULL, 
	settings JSON DEFAULT '{}' NOT NULL, 
	max_pages BIGINT, 
	max_depth INTEGER, 
	rate DOUBLE, 
	burst DOUBLE, 
	queue_limit INTEGER, 
	tasks_created BIGINT DEFAULT 0 NOT NULL, 
	created_at DOUBLE NOT NULL, 
	updated_at DOUBLE NOT NULL, 
	finished_at DOUBLE, 
	consecutive_failures INTEGER DEFAULT 0 NOT NULL, 
	paused_until DOUBLE, 
	pause_reason TEXT, 
	delete_at DOUBLE, 
	PRIMARY KEY (name)
);

CREATE TABLE crawl_stats (
	project VARCHAR(200) NOT NULL, 
	host VARCHAR(300) NOT NULL, 
	minute DOUBLE NOT NULL, 
	fetched BIGINT DEFAULT 0 NOT NULL, 
	done BIGINT DEFAULT 0 NOT NULL, 
	failed BIGINT DEFAULT 0 NOT NULL, 
	retried BIGINT DEFAULT 0 NOT NULL, 
	bytes BIGINT DEFAULT 0 NOT NULL, 
	fetch_seconds DOUBLE DEFAULT 0 NOT NULL, 
	browser_seconds DOUBLE DEFAULT 0 NOT NULL, 
	le_100ms BIGINT DEFAULT 0 NOT NULL, 
	le_250ms BIGINT DEFAULT 0 NOT NULL, 
	le_500ms BIGINT DEFAULT 0 NOT NULL, 
	le_1s BIGINT DEFAULT 0 NOT NULL, 
	le_2500ms BIGINT DEFAULT 0 NOT NULL, 
	le_5s BIGINT DEFAULT 0 NOT NULL, 
	le_10s BIGINT DEFAULT 0 NOT NULL, 
	le_inf BIGINT DEFAULT 0 NOT NULL, links_too_long BIGINT DEFAULT 0 NOT NULL, links_bad_host BIGINT DEFAULT 0 NOT NULL, links_over_limit BIGINT DEFAULT 0 NOT NULL, html_depth_capped BIGINT DEFAULT 0 NOT NULL, trap_links BIGINT DEFAULT 0 NOT NULL, rendered BIGINT DEFAULT 0 NOT NULL, 
	PRIMARY KEY (project, host, minute)
);

CREATE INDEX ix_crawl_stats_minute ON crawl_stats (project, minute);

CREATE INDEX ix_crawl_tasks_project_state ON crawl_tasks (project, status) WHERE status <> 'queued';

CREATE INDEX ix_crawl_tasks_robots ON crawl_tasks (project, status) WHERE callback = '__robots__';

CREATE INDEX ix_crawl_tasks_pending_due ON crawl_tasks (project, next_run_at) WHERE status = 'pending';

CREATE TABLE worker_leases (
	worker VARCHAR(300) NOT NULL, 
	expires_at DOUBLE NOT NULL, 
	updated_at DOUBLE NOT NULL, 
	PRIMARY KEY (worker)
);

CREATE TABLE crawl_tallies (
	project VARCHAR(200) NOT NULL, 
	tally VARCHAR(20) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	count BIGINT DEFAULT 0 NOT NULL, 
	PRIMARY KEY (project, tally, name)
);

CREATE TABLE task_counts (
	project VARCHAR(200) NOT NULL, 
	robots BOOLEAN NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	rows BIGINT DEFAULT 0 NOT NULL, 
	PRIMARY KEY (project, robots, status)
);

CREATE TABLE host_task_counts (
	project VARCHAR(200) NOT NULL, 
	host VARCHAR(300) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	rows BIGINT DEFAULT 0 NOT NULL, 
	PRIMARY KEY (project, host, status)
);

CREATE TABLE task_counts_delta (
	project VARCHAR(200) NOT NULL, 
	host VARCHAR(300) NOT NULL, 
	robots BOOLEAN NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	rows BIGINT NOT NULL
);

CREATE TRIGGER count_crawl_tasks_insert AFTER INSERT ON crawl_tasks BEGIN 
        INSERT INTO task_counts (project, robots, status, rows)
        VALUES (NEW.project, NEW.callback = '__robots__', NEW.status, 1)
        ON CONFLICT (project, robots, status) DO UPDATE SET rows = task_counts.rows + excluded.rows;
        INSERT INTO host_task_counts (project, host, status, rows)
        SELECT NEW.project, NEW.host, NEW.status, 1 WHERE NEW.callback <> '__robots__'
        ON CONFLICT (project, host, status) DO UPDATE SET rows = host_task_counts.rows + excluded.rows; END;

CREATE TRIGGER count_crawl_tasks_delete AFTER DELETE ON crawl_tasks BEGIN 
        INSERT INTO task_counts (project, robots, status, rows)
        VALUES (OLD.project, OLD.callback = '__robots__', OLD.status, -1)
        ON CONFLICT (project, robots, status) DO UPDATE SET rows = task_counts.rows + excluded.rows;
        INSERT INTO host_task_counts (project, host, status, rows)
        SELECT OLD.project, OLD.host, OLD.status, -1 WHERE OLD.callback <> '__robots__'
        ON CONFLICT (project, host, status) DO UPDATE SET rows = host_task_counts.rows + excluded.rows; END;

CREATE TRIGGER count_crawl_tasks_update AFTER UPDATE ON crawl_tasks WHEN OLD.status IS NOT NEW.status OR OLD.project IS NOT NEW.project OR OLD.host IS NOT NEW.host OR OLD.callback IS NOT NEW.callback BEGIN 
        INSERT INTO task_counts (project, robots, status, rows)
        VALUES (OLD.project, OLD.callback = '__robots__', OLD.status, -1)
        ON CONFLICT (project, robots, status) DO UPDATE SET rows = task_counts.rows + excluded.rows;
        INSERT INTO host_task_counts (project, host, status, rows)
        SELECT OLD.project, OLD.host, OLD.status, -1 WHERE OLD.callback <> '__robots__'
        ON CONFLICT (project, host, status) DO UPDATE SET rows = host_task_counts.rows + excluded.rows; 
        INSERT INTO task_counts (project, robots, status, rows)
        VALUES (NEW.project, NEW.callback = '__robots__', NEW.status, 1)
        ON CONFLICT (project, robots, status) DO UPDATE SET rows = task_counts.rows + excluded.rows;
        INSERT INTO host_task_counts (project, host, status, rows)
        SELECT NEW.project, NEW.host, NEW.status, 1 WHERE NEW.callback <> '__robots__'
        ON CONFLICT (project, host, status) DO UPDATE SET rows = host_task_counts.rows + excluded.rows; END;

CREATE TRIGGER count_results_insert AFTER INSERT ON results BEGIN 
        INSERT INTO task_counts (project, robots, status, rows) VALUES (NEW.project, 0, 'items', 1)
        ON CONFLICT (project, robots, status) DO UPDATE SET rows = task_counts.rows + excluded.rows; END;

CREATE TRIGGER count_results_delete AFTER DELETE ON results BEGIN 
        INSERT INTO task_counts (project, robots, status, rows) VALUES (OLD.project, 0, 'items', -1)
        ON CONFLICT (project, robots, status) DO UPDATE SET rows = task_counts.rows + excluded.rows; END;

CREATE INDEX ix_crawl_tasks_failed ON crawl_tasks (project, error_kind, status_code, updated_at) WHERE status = 'failed' AND callback <> '__robots__';

CREATE TABLE "render_hosts" (
	project VARCHAR(200) NOT NULL, 
	host VARCHAR(300) NOT NULL, 
	callback VARCHAR(200) NOT NULL, 
	shape VARCHAR(500) NOT NULL, 
	decision VARCHAR(16) DEFAULT 'render' NOT NULL, 
	samples INTEGER DEFAULT 0 NOT NULL, 
	agreed INTEGER DEFAULT 0 NOT NULL, 
	mismatches INTEGER DEFAULT 0 NOT NULL, 
	first_url TEXT NOT NULL, 
	reason TEXT, 
	created_at DOUBLE NOT NULL, 
	updated_at DOUBLE, rerendered INTEGER DEFAULT 0 NOT NULL, rerender_skipped INTEGER DEFAULT 0 NOT NULL, 
	PRIMARY KEY (project, host, callback, shape)
);

CREATE TABLE project_stat_totals (
	project VARCHAR(200) NOT NULL, 
	fetched BIGINT DEFAULT 0 NOT NULL, 
	done BIGINT DEFAULT 0 NOT NULL, 
	failed BIGINT DEFAULT 0 NOT NULL, 
	retried BIGINT DEFAULT 0 NOT NULL, 
	bytes BIGINT DEFAULT 0 NOT NULL, 
	rendered BIGINT DEFAULT 0 NOT NULL, 
	links_too_long BIGINT DEFAULT 0 NOT NULL, 
	links_bad_host BIGINT DEFAULT 0 NOT NULL, 
	links_over_limit BIGINT DEFAULT 0 NOT NULL, 
	html_depth_capped BIGINT DEFAULT 0 NOT NULL, 
	trap_links BIGINT DEFAULT 0 NOT NULL, 
	fetch_seconds DOUBLE DEFAULT 0 NOT NULL, 
	browser_seconds DOUBLE DEFAULT 0 NOT NULL, 
	PRIMARY KEY (project)
);

CREATE TABLE project_stat_deltas (
	project VARCHAR(200) NOT NULL, 
	fetched BIGINT DEFAULT 0 NOT NULL, 
	done BIGINT DEFAULT 0 NOT NULL, 
	failed BIGINT DEFAULT 0 NOT NULL, 
	retried BIGINT DEFAULT 0 NOT NULL, 
	bytes BIGINT DEFAULT 0 NOT NULL, 
	rendered BIGINT DEFAULT 0 NOT NULL, 
	links_too_long BIGINT DEFAULT 0 NOT NULL, 
	links_bad_host BIGINT DEFAULT 0 NOT NULL, 
	links_over_limit BIGINT DEFAULT 0 NOT NULL, 
	html_depth_capped BIGINT DEFAULT 0 NOT NULL, 
	trap_links BIGINT DEFAULT 0 NOT NULL, 
	fetch_seconds DOUBLE DEFAULT 0 NOT NULL, 
	browser_seconds DOUBLE DEFAULT 0 NOT NULL
);

CREATE TRIGGER stat_totals_insert AFTER INSERT ON crawl_stats BEGIN INSERT INTO project_stat_totals (project, fetched, done, failed, retried, bytes, rendered, links_too_long, links_bad_host, links_over_limit, html_depth_capped, trap_links, fetch_seconds, browser_seconds) VALUES (NEW.project, NEW.fetched, NEW.done, NEW.failed, NEW.retried, NEW.bytes, NEW.rendered, NEW.links_too_long, NEW.links_bad_host, NEW.links_over_limit, NEW.html_depth_capped, NEW.trap_links, NEW.fetch_seconds, NEW.browser_seconds) ON CONFLICT (project) DO UPDATE SET fetched = project_stat_totals.fetched + excluded.fetched, done = project_stat_totals.done + excluded.done, failed = project_stat_totals.failed + excluded.failed, retried = project_stat_totals.retried + excluded.retried, bytes = project_stat_totals.bytes + excluded.bytes, rendered = project_stat_totals.rendered + excluded.rendered, links_too_long = project_stat_totals.links_too_long + excluded.links_too_long, links_bad_host = project_stat_totals.links_bad_host + excluded.links_bad_host, links_over_limit = project_stat_totals.links_over_limit + excluded.links_over_limit, html_depth_capped = project_stat_totals.html_depth_capped + excluded.html_depth_capped, trap_links = project_stat_totals.trap_links + excluded.trap_links, fetch_seconds = project_stat_totals.fetch_seconds + excluded.fetch_seconds, browser_seconds = project_stat_totals.browser_seconds + excluded.browser_seconds; END;

CREATE TRIGGER stat_totals_delete AFTER DELETE ON crawl_stats BEGIN INSERT INTO project_stat_totals (project, fetched, done, failed, retried, bytes, rendered, links_too_long, links_bad_host, links_over_limit, html_depth_capped, trap_links, fetch_seconds, browser_seconds) VALUES (OLD.project, -OLD.fetched, -OLD.done, -OLD.failed, -OLD.retried, -OLD.bytes, -OLD.rendered, -OLD.links_too_long, -OLD.links_bad_host, -OLD.links_over_limit, -OLD.html_depth_capped, -OLD.trap_links, -OLD.fetch_seconds, -OLD.browser_seconds) ON CONFLICT (project) DO UPDATE SET fetched = project_stat_totals.fetched + excluded.fetched, done = project_stat_totals.done + excluded.done, failed = project_stat_totals.failed + excluded.failed, retried = project_stat_totals.retried + excluded.retried, bytes = project_stat_totals.bytes + excluded.bytes, rendered = project_stat_totals.rendered + excluded.rendered, links_too_long = project_stat_totals.links_too_long + excluded.links_too_long, links_bad_host = project_stat_totals.links_bad_host + excluded.links_bad_host, links_over_limit = project_stat_totals.links_over_limit + excluded.links_over_limit, html_depth_capped = project_stat_totals.html_depth_capped + excluded.html_depth_capped, trap_links = project_stat_totals.trap_links + excluded.trap_links, fetch_seconds = project_stat_totals.fetch_seconds + excluded.fetch_seconds, browser_seconds = project_stat_totals.browser_seconds + excluded.browser_seconds; END;

CREATE TRIGGER stat_totals_update AFTER UPDATE ON crawl_stats BEGIN INSERT INTO project_stat_totals (project, fetched, done, failed, retried, bytes, rendered, links_too_long, links_bad_host, links_over_limit, html_depth_capped, trap_links, fetch_seconds, browser_seconds) VALUES (OLD.project, -OLD.fetched, -OLD.done, -OLD.failed, -OLD.retried, -OLD.bytes, -OLD.rendered, -OLD.links_too_long, -OLD.links_bad_host, -OLD.links_over_limit, -OLD.html_depth_capped, -OLD.trap_links, -OLD.fetch_seconds, -OLD.browser_seconds) ON CONFLICT (project) DO UPDATE SET fetched = project_stat_totals.fetched + excluded.fetched, done = project_stat_totals.done + excluded.done, failed = project_stat_totals.failed + excluded.failed, retried = project_stat_totals.retried + excluded.retried, bytes = project_stat_totals.bytes + excluded.bytes, rendered = project_stat_totals.rendered + excluded.rendered, links_too_long = project_stat_totals.links_too_long + excluded.links_too_long, links_bad_host = project_stat_totals.links_bad_host + excluded.links_bad_host, links_over_limit = project_stat_totals.links_over_limit + excluded.links_over_limit, html_depth_capped = project_stat_totals.html_depth_capped + excluded.html_depth_capped, trap_links = project_stat_totals.trap_links + excluded.trap_links, fetch_seconds = project_stat_totals.fetch_seconds + excluded.fetch_seconds, browser_seconds = project_stat_totals.browser_seconds + excluded.browser_seconds; INSERT INTO project_stat_totals (project, fetched, done, failed, retried, bytes, rendered, links_too_long, links_bad_host, links_over_limit, html_depth_capped, trap_links, fetch_seconds, browser_seconds) VALUES (NEW.project, NEW.fetched, NEW.done, NEW.failed, NEW.retried, NEW.bytes, NEW.rendered, NEW.links_too_long, NEW.links_bad_host, NEW.links_over_limit, NEW.html_depth_capped, NEW.trap_links, NEW.fetch_seconds, NEW.browser_seconds) ON CONFLICT (project) DO UPDATE SET fetched = project_stat_totals.fetched + excluded.fetched, done = project_stat_totals.done + excluded.done, failed = project_stat_totals.failed + excluded.failed, retried = project_stat_totals.retried + excluded.retried, bytes = project_stat_totals.bytes + excluded.bytes, rendered = project_stat_totals.rendered + excluded.rendered, links_too_long = project_stat_totals.links_too_long + excluded.links_too_long, links_bad_host = project_stat_totals.links_bad_host + excluded.links_bad_host, links_over_limit = project_stat_totals.links_over_limit + excluded.links_over_limit, html_depth_capped = project_stat_totals.html_depth_capped + excluded.html_depth_capped, trap_links = project_stat_totals.trap_links + excluded.trap_links, fetch_seconds = project_stat_totals.fetch_seconds + excluded.fetch_seconds, browser_seconds = project_stat_totals.browser_seconds + excluded.browser_seconds; END;

CREATE INDEX ix_crawl_tasks_url ON crawl_tasks (project, (substr(url, 1, 1000))) WHERE status <> 'queued';

CREATE TABLE render_pages_plain (
	task_id VARCHAR(32) NOT NULL, 
	project VARCHAR(200) NOT NULL, 
	host VARCHAR(300) NOT NULL, 
	callback VARCHAR(200) NOT NULL, 
	shape VARCHAR(500) NOT NULL, 
	parsed_at DOUBLE NOT NULL, 
	PRIMARY KEY (task_id)
);

CREATE INDEX ix_render_pages_plain_key ON render_pages_plain (project, host, callback, shape, parsed_at);

