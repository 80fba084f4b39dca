"""The score store: artifacts/scores.duckdb (docs/DESIGN.md, Score store).

`scorers` has one row per (model hash, dataset hash, objective); `scores` one row
per (scorer_id, example_id); `embeddings`, for a contrastive scorer, each scored pair's
image and text features (JEST rebuilds the reference's logits of any super-batch from
them). Shards are ingested one transaction each, recorded in `ingested`, so a crash
mid-ingest leaves either all or none of a shard's rows and a rerun ingests only what
is missing. The primary key makes a duplicate impossible.

DuckDB allows one writer process per file: `connect` waits for the lock up to
`wait_s` seconds (so two runs serialise), then raises StoreBusy naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

from winnow.errors import MissingInput, StaleInput, StoreBusy, StoreError, WinnowError

SCHEMA = """
CREATE TABLE IF NOT EXISTS scorers (
    scorer_id VARCHAR PRIMARY KEY,
    model_hash VARCHAR NOT NULL,
    dataset_hash VARCHAR NOT NULL,
    objective VARCHAR NOT NULL,
    model_name VARCHAR,
    created_at TIMESTAMP DEFAULT current_timestamp,
    completed_at TIMESTAMP,
    host VARCHAR,
    num_examples BIGINT,
    seconds DOUBLE,
    UNIQUE (model_hash, dataset_hash, objective)
);
CREATE TABLE IF NOT EXISTS scores (
    scorer_id VARCHAR NOT NULL,
    example_id BIGINT NOT NULL,
    loss FLOAT,            -- NULL where the example could not be scored (undecodable image)
    status VARCHAR NOT NULL,
    PRIMARY KEY (scorer_id, example_id)
);
CREATE TABLE IF NOT EXISTS embeddings (  -- contrastive scorers: each pair's normalised features (JEST)
    scorer_id VARCHAR NOT NULL,
    example_id BIGINT NOT NULL,
    image FLOAT[] NOT NULL,
    text FLOAT[] NOT NULL,
    PRIMARY KEY (scorer_id, example_id)
);
CREATE TABLE IF NOT EXISTS ingested (
    scorer_id VARCHAR NOT NULL,
    shard VARCHAR NOT NULL,
    num_rows BIGINT NOT NULL,
    ingested_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (scorer_id, shard)
);
"""


def scorer_id_for(model_hash: str, dataset_hash: str, objective: str) -> str:
    return hashlib.sha256(f"{model_hash}|{dataset_hash}|{objective}".encode()).hexdigest()[:16]


@contextlib.contextmanager
def connect(path: str | Path, read_only: bool = False, wait_s: float = 120.0):
    path = Path(path)
    if read_only and not path.exists():
        raise MissingInput(f"{path}: no score store yet; run the score stage (`winnow score`) first")
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline, delay = time.monotonic() + wait_s, 0.1
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.Error as e:
            if not _held_by_another(e):
                raise StoreError(
                    f"{path}: not a readable DuckDB score store ({e}). Move it aside (nothing is deleted) and rerun "
                    f"`winnow score`: it rebuilds the store from the per-shard score files under score_shards/"
                ) from e
            if time.monotonic() > deadline:
                raise StoreBusy(
                    f"{path}: cannot open the score store ({e}); another winnow process is writing it. "
                    f"Wait for it to finish, or point this run at another store."
                ) from e
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    try:
        if not read_only:
            con.execute(SCHEMA)
        yield con
    except duckdb.Error as e:
        if not _damaged(e):
            raise
        raise StoreError(
            f"{path}: a block of the score store is damaged ({str(e)[:160]}). Move it aside (nothing is deleted) and "
            f"rerun `winnow score`: it rebuilds the store from the per-shard score files under score_shards/"
        ) from e
    finally:
        con.close()


def _damaged(error: Exception) -> bool:
    """DuckDB's word for a block that fails its checksum, read after the file opened ("Corrupt database file:
    computed checksum ... does not match stored checksum ... in block at location ...")."""
    message = str(error).lower()
    return "corrupt database" in message or "does not match stored checksum" in message


def _held_by_another(error: Exception) -> bool:
    """DuckDB's message when another process holds the file's lock ("Could not set lock on file ...: Conflicting
    lock is held in ..."); a damaged file says other things (a bad block, a checksum), never these."""
    message = str(error).lower()
    return "could not set lock" in message or "conflicting lock" in message


def find_scorer(con, scorer_id: str) -> dict | None:
    rows = con.execute("SELECT * FROM scorers WHERE scorer_id = ?", [scorer_id]).fetchall()
    if not rows:
        return None
    return dict(zip([d[0] for d in con.description], rows[0]))


def register_scorer(con, scorer_id: str, model_hash: str, dataset_hash: str, objective: str, model_name: str) -> None:
    con.execute(
        "INSERT INTO scorers (scorer_id, model_hash, dataset_hash, objective, model_name, host) VALUES (?, ?, ?, ?, ?, ?) ON "
        "CONFLICT DO NOTHING",
        [scorer_id, model_hash, dataset_hash, objective, model_name, socket.gethostname()],
    )


def ingested_shards(con, scorer_id: str) -> set[str]:
    return {r[0] for r in con.execute("SELECT shard FROM ingested WHERE scorer_id = ?", [scorer_id]).fetchall()}


def ingest_shard(con, scorer_id: str, shard: str, parquet_path: Path) -> int:
    """Insert one scored shard's rows and record it, in one transaction. Returns rows inserted."""
    con.execute("BEGIN TRANSACTION")
    try:
        before = con.execute("SELECT count(*) FROM scores WHERE scorer_id = ?", [scorer_id]).fetchone()[0]
        con.execute(
            "INSERT INTO scores SELECT ?, example_id, loss, status FROM read_parquet(?)",
            [scorer_id, str(parquet_path)],
        )
        after = con.execute("SELECT count(*) FROM scores WHERE scorer_id = ?", [scorer_id]).fetchone()[0]
        if "image_embedding" in pq.read_schema(parquet_path).names:
            con.execute(
                "INSERT INTO embeddings SELECT ?, example_id, CAST(image_embedding AS FLOAT[]), CAST(text_embedding AS FLOAT[]) "
                "FROM read_parquet(?) WHERE loss IS NOT NULL",
                [scorer_id, str(parquet_path)],
            )
        con.execute("INSERT INTO ingested (scorer_id, shard, num_rows) VALUES (?, ?, ?)", [scorer_id, shard, after - before])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return after - before


def embeddings_complete(con, scorer_id: str) -> bool:
    """Every pair the scorer scored has its features (a contrastive scorer written before they were stored has none)."""
    query = (
        "SELECT (SELECT count(*) FROM embeddings WHERE scorer_id = ?) "
        "= (SELECT count(*) FROM scores WHERE scorer_id = ? AND loss IS NOT NULL)"
    )
    return bool(con.execute(query, [scorer_id, scorer_id]).fetchall()[0][0])


def drop_scorer(con, scorer_id: str) -> None:
    """Forget one scorer (its rows in every table), in one transaction: for a scorer written before the
    store held what this objective needs, which is then scored again."""
    con.execute("BEGIN TRANSACTION")
    for table in ("scores", "embeddings", "ingested", "scorers"):
        con.execute(f"DELETE FROM {table} WHERE scorer_id = ?", [scorer_id])
    con.execute("COMMIT")


def unscorable(con, scorer_id: str) -> int:
    """How many of the scorer's examples could not be scored (kept with a NULL loss and the reason)."""
    return con.execute("SELECT count(*) FROM scores WHERE scorer_id = ? AND status <> 'ok'", [scorer_id]).fetchone()[0]


def mark_complete(con, scorer_id: str, seconds: float) -> int:
    n = con.execute("SELECT count(*) FROM scores WHERE scorer_id = ?", [scorer_id]).fetchone()[0]
    con.execute(
        "UPDATE scorers SET completed_at = current_timestamp, num_examples = ?, seconds = ? WHERE scorer_id = ?",
        [n, seconds, scorer_id],
    )
    return n


def holds(path: str | Path, scorer_id: str) -> bool:
    """Whether the store at `path` holds this scorer complete, with every example it counted when completed: what
    makes the score stage's cached result true (a store moved aside or rebuilt without it is not)."""
    if not Path(path).is_file():
        return False
    try:
        with connect(path, read_only=True, wait_s=5.0) as con:
            scorer = find_scorer(con, scorer_id)
            if scorer is None or scorer["completed_at"] is None:
                return False
            n = con.execute("SELECT count(*) FROM scores WHERE scorer_id = ?", [scorer_id]).fetchone()[0]
    except (WinnowError, duckdb.Error):  # busy, damaged or of another schema: the stage itself says which
        return False
    return n == scorer["num_examples"]


def load_losses(path: str | Path, scorer_id: str) -> np.ndarray:
    """The scorer's losses as one float32 array indexed by example id (NaN where unscored), loaded
    once: 4 bytes per pool example, never a query per step."""
    with connect(path, read_only=True) as con:
        scorer = find_scorer(con, scorer_id)
        if scorer is None or scorer["completed_at"] is None:
            raise StaleInput(f"{path}: scorer {scorer_id} is not complete in the store; run `winnow score` first")
        table = con.sql(f"SELECT example_id, loss FROM scores WHERE scorer_id = '{scorer_id}'").to_arrow_table()
    example_id = table.column("example_id").to_numpy()
    by_id = np.full(int(example_id.max()) + 1 if len(example_id) else 0, np.nan, dtype=np.float32)
    by_id[example_id] = table.column("loss").to_numpy(zero_copy_only=False).astype(np.float32)
    return by_id


def load_embeddings(path: str | Path, scorer_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A contrastive scorer's image and text features as two float32 (ids, dim) arrays indexed by
    example id (NaN where unscored), loaded once like the losses."""
    with connect(path, read_only=True) as con:
        if not embeddings_complete(con, scorer_id):
            raise StaleInput(f"{path}: scorer {scorer_id} lacks features for some scored pairs; rerun `winnow score`")
        table = con.sql(f"SELECT example_id, image, text FROM embeddings WHERE scorer_id = '{scorer_id}'").to_arrow_table()
        n = con.execute("SELECT max(example_id) + 1 FROM scores WHERE scorer_id = ?", [scorer_id]).fetchall()[0][0]
    example_id = table.column("example_id").to_numpy()
    out = []
    for name in ("image", "text"):
        column = table.column(name).combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(example_id), -1)
        by_id = np.full((n, values.shape[1]), np.nan, dtype=np.float32)
        by_id[example_id] = values
        out.append(by_id)
    return out[0], out[1]
