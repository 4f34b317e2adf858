"""`score --output-table db.name`: the scored output as a catalog table that switches versions atomically.

Each run writes a complete score output (rows partitioned by event_date, _pairs, _quarantine,
_summary.json) into a new version folder under `--output`, the versions root:
`<root>/v-<UTC time>-<run_id>`. Only then does one metastore update point the table at it: CREATE
TABLE … LOCATION for a new table, ALTER TABLE … SET LOCATION after that. A reader resolves the table
once, so it sees the old version or the new one, never a mix or a half-written folder.

The table does not track partitions in the metastore (created with
spark.sql.hive.manageFilesourcePartitions=false, recorded in the table), so its partitions are
discovered under its one location and the switch moves all of them at once; per-partition
locations would each need their own update. The previous `output.table_versions_kept - 1`
versions stay on disk for readers still scanning them and for rollback (ALTER TABLE … SET LOCATION
back); older ones are removed, only folders that are this root's own marked score versions.

A table clickweight did not create (no `clickweight.kind` property) is never altered.
"""
from __future__ import annotations

import datetime
import re
from typing import Any
from urllib.parse import urlparse

from jobs.outputs import MARKER, OutputRefused, check_output, marker, output_kind, read_marker

TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
VERSION = re.compile(r"^v-\d{8}T\d{6}Z-[A-Za-z0-9_-]{1,64}$")
KIND = "scored"  # the table property clickweight.kind


def check_table_name(name: str) -> str:
    if not TABLE_NAME.match(name):
        raise OutputRefused(f"--output-table {name!r}: expected name or db.name (letters, digits, _)")
    return name


def table_properties(spark, name: str) -> dict[str, str] | None:
    """The table's properties, or None when there is no such table."""
    if not spark.catalog.tableExists(name):
        return None
    return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}


def table_location(spark, name: str) -> str:
    """Where the table's current version lives (what `train --input-table` streams)."""
    check_table_name(name)
    if not spark.catalog.tableExists(name):
        catalog = spark.conf.get("spark.sql.catalogImplementation")
        raise OutputRefused(f"table {name} not found in the {catalog} catalog: is the metastore configured as "
                            "for the score job?")
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()
    location = next(r["data_type"] for r in rows if r["col_name"] == "Location")
    # The metastore stores local folders as file: URIs; the trainer reads local folders as paths.
    return urlparse(location).path if location.startswith("file:") else location


def check_table(spark, fs, name: str, root: str, inputs, overwrite: bool) -> dict[str, str] | None:
    """Refuse, before any work, a table or versions root this run must not touch."""
    check_table_name(name)
    if any(c in root for c in "'\\`;"):  # the version paths go into SQL string literals
        raise OutputRefused(f"--output {root!r}: a table's versions root may not contain ' \\ ` or ;")
    if spark.conf.get("spark.sql.catalogImplementation") != "hive":
        raise OutputRefused("--output-table needs a Hive metastore: set spark.sql.catalogImplementation=hive "
                            "(and the metastore's hive-site.xml or spark.hadoop.javax.jdo.* settings)")
    props = table_properties(spark, name)
    if props is not None and props.get("clickweight.kind") != KIND:
        raise OutputRefused(f"table {name} exists and was not created by clickweight score; drop it or choose "
                            "another --output-table (clickweight never alters other tables)")
    if props is not None and props.get("clickweight.versions_root") != root:
        raise OutputRefused(f"table {name} keeps its versions under {props.get('clickweight.versions_root')}, "
                            f"not {root}: pass that as --output")
    check_output(fs, root, "table", inputs, overwrite)
    return props


def new_version(root: str, run_id: str) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{root.rstrip('/')}/v-{stamp}-{run_id}"


def mark_root(fs, root: str, name: str, run_id: str) -> None:
    if read_marker(fs, root) is None:
        fs.mkdirs(root)
        fs.write_text(f"{root}/{MARKER}", marker("table", run_id, root, table=name))


def publish(spark, name: str, version: str, root: str, run_id: str, existed: bool) -> str:
    """Point `name` at `version` in one metastore update; returns 'created', 'switched' or 'recreated'."""
    props = (f"TBLPROPERTIES ('clickweight.kind'='{KIND}', 'clickweight.versions_root'='{root}', "
             f"'clickweight.run_id'='{run_id}')")
    if existed:
        new_schema = spark.read.parquet(version).schema
        if [(f.name, f.dataType) for f in new_schema] == [(f.name, f.dataType) for f in spark.table(name).schema]:
            spark.sql(f"ALTER TABLE {name} SET LOCATION '{version}'")
            spark.sql(f"ALTER TABLE {name} SET {props}")
            spark.catalog.refreshTable(name)
            return "switched"
        # Other columns (another strategy's signals): the metastore schema must change with the location.
        # The table is external (it has a LOCATION), so dropping it removes no files. Its schema and its
        # event_date partitioning are inferred from the version folder.
        spark.sql(f"DROP TABLE {name}")
    previous = spark.conf.get("spark.sql.hive.manageFilesourcePartitions")
    spark.conf.set("spark.sql.hive.manageFilesourcePartitions", "false")
    try:
        spark.sql(f"CREATE TABLE {name} USING parquet LOCATION '{version}' {props}")
    finally:
        spark.conf.set("spark.sql.hive.manageFilesourcePartitions", previous)
    return "recreated" if existed else "created"


def prune(fs, root: str, keep: int, current: str) -> list[str]:
    """Remove this root's own score versions beyond the newest `keep` (never `current`); returns them."""
    versions = sorted(n for n in fs.list_names(root) if VERSION.match(n) and output_kind(fs, f"{root}/{n}") == "score")
    removed = []
    for name in versions[:-keep] if keep > 0 else versions:
        path = f"{root}/{name}"
        if path != current:
            fs.delete(path)
            removed.append(path)
    return removed


def table_summary(name: str, version: str, action: str, removed: list[str]) -> dict[str, Any]:
    return {"table": name, "location": version, "action": action, "versions_removed": removed}
