//! Embedded store: one redb file under `--data`. Sync batches are committed by one
//! writer thread, several at a time (group commit), with `Durability::Immediate`
//! (fsync) before any of them is answered, so an acknowledged batch survives `kill -9`.
//! Other redb calls block too, so they run on tokio's blocking pool.
//!
//! Tables (keys are tuples; the `*_EXP` tables order the same records by time so that
//! expiry is a range scan):
//! - `batches` (node, batch_id) -> received_ms, `batch_exp` (received_ms, node, batch_id)
//! - `ctr_total` (end_ms, start_ms, window_ms, key) -> fleet total
//! - `ctr_node` (end_ms, start_ms, window_ms, key, node) -> that node's total
//! - `event_ids` (minute_ms, tenant, event_id): the events seen, for de-duplication. A
//!   node re-sends a record unchanged, so its minute is part of its identity; keyed
//!   minute first, one table serves both the duplicate check and expiry (a range), and
//!   a sync's inserts land in the current minute's pages.
//! - `rollups` (tenant, minute_ms) -> JSON [`Rollup`], `rollup_exp` (minute_ms, tenant)
//! - `plans` tenant -> JSON [`PlanRecord`], `plan_seq` seq -> tenant
//! - `purges` seq -> JSON [`PurgeRecord`], `meta` name -> u64 (sequence counters)

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use tokio::sync::oneshot;

use super::{BatchOutcome, COUNTER_GRACE_MS, CounterTotals, Feed, Store, StoreError, feed_next};
use crate::model::{
    CounterDelta, NODE_TTL_MS, PURGES_KEPT, PlanBody, PlanRecord, PreparedBatch, PurgeBody,
    PurgeRecord, Rollup,
};

const BATCHES: TableDefinition<(&str, &str), u64> = TableDefinition::new("batches");
const BATCH_EXP: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("batch_exp");
const CTR_TOTAL: TableDefinition<(u64, u64, u64, &str), u64> = TableDefinition::new("ctr_total");
const CTR_NODE: TableDefinition<(u64, u64, u64, &str, &str), u64> =
    TableDefinition::new("ctr_node");
const EVENT_IDS: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("event_ids");
/// The layout before `event_ids`; dropped when found.
const OLD_EVENT_TABLES: [&str; 2] = ["events", "event_exp"];
const ROLLUPS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("rollups");
const ROLLUP_EXP: TableDefinition<(u64, &str), ()> = TableDefinition::new("rollup_exp");
const PLANS: TableDefinition<&str, &[u8]> = TableDefinition::new("plans");
const PLAN_SEQ: TableDefinition<u64, &str> = TableDefinition::new("plan_seq");
const PURGES: TableDefinition<u64, &[u8]> = TableDefinition::new("purges");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_PLAN_SEQ: &str = "plan_seq";
const META_PURGE_SEQ: &str = "purge_seq";
/// One expiry transaction deletes at most this many records per table, so a large
/// backlog never holds the write lock for long; the sweep loops until done.
const EXPIRE_CHUNK: usize = 50_000;
/// Most sync batches committed in one transaction.
const GROUP_MAX: usize = 64;

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

struct Inner {
    db: Database,
    /// Node liveness is only meaningful for 10 s, so it is not worth a disk write.
    nodes: Mutex<HashMap<String, u64>>,
    /// Newest committed plan and purge sequences. Every sync asks for the feeds, and
    /// nearly always nothing is new: this answers that without a read transaction. This
    /// process is the file's only writer (redb locks it), so memory is authoritative.
    latest_plan_seq: AtomicU64,
    latest_purge_seq: AtomicU64,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// To the group-commit writer thread; it exits when the last clone is dropped.
    writer: mpsc::Sender<Job>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/tollgate.redb`. redb locks the file, so a second sidecar
    /// on the same directory fails here instead of corrupting it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Embedded(format!("create data dir {}: {e}", dir.display())))?;
        let path = dir.join("tollgate.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Embedded(format!("open {}: {e}", path.display())))?;
        // Create every table up front so read transactions never meet a missing one.
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(BATCHES).map_err(db_err)?;
            txn.open_table(BATCH_EXP).map_err(db_err)?;
            txn.open_table(CTR_TOTAL).map_err(db_err)?;
            txn.open_table(CTR_NODE).map_err(db_err)?;
            txn.open_table(EVENT_IDS).map_err(db_err)?;
            for old in OLD_EVENT_TABLES {
                let old: TableDefinition<(), ()> = TableDefinition::new(old);
                // Only its name matters for deleting; a missing table is not an error.
                txn.delete_table(old).map_err(db_err)?;
            }
            txn.open_table(ROLLUPS).map_err(db_err)?;
            txn.open_table(ROLLUP_EXP).map_err(db_err)?;
            txn.open_table(PLANS).map_err(db_err)?;
            txn.open_table(PLAN_SEQ).map_err(db_err)?;
            txn.open_table(PURGES).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let inner = Arc::new(Inner {
            latest_plan_seq: AtomicU64::new(current_seq(&db, META_PLAN_SEQ)?),
            latest_purge_seq: AtomicU64::new(current_seq(&db, META_PURGE_SEQ)?),
            db,
            nodes: Mutex::new(HashMap::new()),
        });
        let (writer, jobs) = mpsc::channel();
        let for_writer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("sidecar-writer".into())
            .spawn(move || writer_loop(for_writer, jobs))
            .map_err(|e| StoreError::Embedded(format!("start writer thread: {e}")))?;
        Ok(Self { inner, writer })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn next_seq(txn: &WriteTransaction, name: &str) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let seq = meta.get(name).map_err(db_err)?.map_or(0, |v| v.value()) + 1;
    meta.insert(name, seq).map_err(db_err)?;
    Ok(seq)
}

fn current_seq(db: &Database, name: &str) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let meta = txn.open_table(META).map_err(db_err)?;
    Ok(meta.get(name).map_err(db_err)?.map_or(0, |v| v.value()))
}

/// Applies one batch inside a shared write transaction (see [`writer_loop`]). Reads
/// see the transaction's own writes, so duplicates across batches of one group are
/// still recognised.
fn apply_in(
    txn: &WriteTransaction,
    batch: &PreparedBatch,
    now_ms: u64,
) -> Result<BatchOutcome, StoreError> {
    let mut outcome = BatchOutcome::default();
    {
        let mut batches = txn.open_table(BATCHES).map_err(db_err)?;
        let key = (batch.node_id.as_str(), batch.batch_id.as_str());
        if batches.get(key).map_err(db_err)?.is_some() {
            outcome.duplicate = true;
        } else {
            batches.insert(key, now_ms).map_err(db_err)?;
            txn.open_table(BATCH_EXP)
                .map_err(db_err)?
                .insert((now_ms, key.0, key.1), ())
                .map_err(db_err)?;
        }
    }
    if outcome.duplicate {
        return Ok(outcome);
    }
    {
        let mut total = txn.open_table(CTR_TOTAL).map_err(db_err)?;
        let mut per_node = txn.open_table(CTR_NODE).map_err(db_err)?;
        for c in &batch.counters {
            let end = c.window_start_ms.saturating_add(c.window_ms);
            let tk = (end, c.window_start_ms, c.window_ms, c.key.as_str());
            let t = total.get(tk).map_err(db_err)?.map_or(0, |v| v.value());
            total
                .insert(tk, t.saturating_add(c.delta))
                .map_err(db_err)?;
            let nk = (
                end,
                c.window_start_ms,
                c.window_ms,
                c.key.as_str(),
                batch.node_id.as_str(),
            );
            let n = per_node.get(nk).map_err(db_err)?.map_or(0, |v| v.value());
            per_node
                .insert(nk, n.saturating_add(c.delta))
                .map_err(db_err)?;
        }
    }
    {
        let mut event_ids = txn.open_table(EVENT_IDS).map_err(db_err)?;
        let mut fresh: BTreeMap<(&str, u64), Rollup> = BTreeMap::new();
        for e in &batch.events {
            let key = (e.minute_ms, e.tenant.as_str(), e.event_id.as_str());
            // insert() returns the old value: present means delivered before (or
            // earlier in this very batch).
            if event_ids.insert(key, ()).map_err(db_err)?.is_some() {
                outcome.events_duplicate += 1;
                continue;
            }
            outcome.events_accepted += 1;
            fresh
                .entry((e.tenant.as_str(), e.minute_ms))
                .or_insert_with(|| Rollup {
                    minute_ms: e.minute_ms,
                    ..Rollup::default()
                })
                .add(e);
        }
        let mut rollups = txn.open_table(ROLLUPS).map_err(db_err)?;
        let mut rollup_exp = txn.open_table(ROLLUP_EXP).map_err(db_err)?;
        for ((tenant, minute), add) in fresh {
            let stored = match rollups.get((tenant, minute)).map_err(db_err)? {
                Some(v) => Some(serde_json::from_slice::<Rollup>(v.value()).map_err(corrupt)?),
                None => None,
            };
            // The expiry index entry is written with the rollup's first events only:
            // rewriting an existing key still dirties its page, and every page costs
            // commit time.
            if stored.is_none() {
                rollup_exp.insert((minute, tenant), ()).map_err(db_err)?;
            }
            let mut r = stored.unwrap_or(Rollup {
                minute_ms: minute,
                ..Rollup::default()
            });
            merge_capped(&mut r, &add);
            let bytes = serde_json::to_vec(&r).map_err(corrupt)?;
            rollups
                .insert((tenant, minute), bytes.as_slice())
                .map_err(db_err)?;
        }
    }
    Ok(outcome)
}

/// Fleet and own totals of each window as `node` sees them, from any table handle (a
/// read transaction's, or the writer's own, which sees its uncommitted writes).
fn read_totals(
    total: &impl ReadableTable<(u64, u64, u64, &'static str), u64>,
    per_node: &impl ReadableTable<(u64, u64, u64, &'static str, &'static str), u64>,
    node: &str,
    windows: &[CounterDelta],
) -> Result<Vec<CounterTotals>, StoreError> {
    let mut out = Vec::with_capacity(windows.len());
    for c in windows {
        let end = c.window_start_ms.saturating_add(c.window_ms);
        let fleet_total = total
            .get((end, c.window_start_ms, c.window_ms, c.key.as_str()))
            .map_err(db_err)?
            .map_or(0, |v| v.value());
        let own = per_node
            .get((end, c.window_start_ms, c.window_ms, c.key.as_str(), node))
            .map_err(db_err)?
            .map_or(0, |v| v.value());
        out.push(CounterTotals { fleet_total, own });
    }
    Ok(out)
}

/// What the writer answers a sync job: the batch's outcome and its windows' totals.
type Applied = (BatchOutcome, Vec<CounterTotals>);

/// Applies every job of one group in one transaction and one fsync. If anything
/// fails, the whole group is rolled back and every job gets the error (the nodes
/// retry; nothing was counted). The totals each sync answers with are read in the same
/// transaction after the whole group is applied: no second transaction or thread hop
/// per sync.
fn commit_group(db: &Database, jobs: &[Job]) -> Result<Vec<Applied>, StoreError> {
    let mut txn = db.begin_write().map_err(db_err)?;
    // The default already, but it is the promise the sync answer rests on: commit
    // returns only once the group is on disk.
    txn.set_durability(Durability::Immediate).map_err(db_err)?;
    let outcomes = jobs
        .iter()
        .map(|j| apply_in(&txn, &j.batch, j.now_ms))
        .collect::<Result<Vec<_>, _>>()?;
    let totals = {
        let total = txn.open_table(CTR_TOTAL).map_err(db_err)?;
        let per_node = txn.open_table(CTR_NODE).map_err(db_err)?;
        jobs.iter()
            .map(|j| read_totals(&total, &per_node, &j.batch.node_id, &j.batch.counters))
            .collect::<Result<Vec<_>, _>>()?
    };
    txn.commit().map_err(db_err)?;
    Ok(outcomes.into_iter().zip(totals).collect())
}

struct Job {
    batch: PreparedBatch,
    now_ms: u64,
    reply: oneshot::Sender<Result<Applied, StoreError>>,
}

/// Group commit: syncs from many nodes tend to arrive together (they tick on the
/// second), and one fsync each would queue them behind each other. The writer takes
/// whatever is waiting, up to `GROUP_MAX`, and commits it at once.
fn writer_loop(inner: Arc<Inner>, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        match commit_group(&inner.db, &group) {
            Ok(outcomes) => {
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    // The caller may have gone (request cancelled): nothing to tell.
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in group {
                    let _ = job.reply.send(Err(StoreError::Embedded(msg.clone())));
                }
            }
        }
    }
}

/// Merges a batch's rollup into the stored one, keeping the route cap of
/// [`Rollup::add`] across batches.
fn merge_capped(into: &mut Rollup, add: &Rollup) {
    into.count += add.count;
    into.latency_ms_sum = into.latency_ms_sum.saturating_add(add.latency_ms_sum);
    for (k, v) in &add.status {
        *into.status.entry(k.clone()).or_default() += v;
    }
    for (route, v) in &add.routes {
        let key = if into.routes.contains_key(route)
            || into.routes.len() < crate::model::MAX_ROUTES_PER_MINUTE
        {
            route.clone()
        } else {
            crate::model::OTHER_ROUTE.to_owned()
        };
        *into.routes.entry(key).or_default() += v;
    }
}

fn expire_once(inner: &Inner, now_ms: u64, retention_ms: u64) -> Result<u64, StoreError> {
    let horizon = now_ms.saturating_sub(retention_ms);
    let counter_horizon = now_ms.saturating_sub(COUNTER_GRACE_MS);
    let txn = inner.db.begin_write().map_err(db_err)?;
    let mut removed = 0u64;
    {
        let mut exp = txn.open_table(BATCH_EXP).map_err(db_err)?;
        let mut main = txn.open_table(BATCHES).map_err(db_err)?;
        let mut old = Vec::new();
        for row in exp
            .range((0u64, "", "")..(horizon, "", ""))
            .map_err(db_err)?
        {
            let (k, _) = row.map_err(db_err)?;
            let (t, n, b) = k.value();
            old.push((t, n.to_owned(), b.to_owned()));
            if old.len() >= EXPIRE_CHUNK {
                break;
            }
        }
        for (t, n, b) in &old {
            exp.remove((*t, n.as_str(), b.as_str())).map_err(db_err)?;
            main.remove((n.as_str(), b.as_str())).map_err(db_err)?;
        }
        removed += old.len() as u64;
    }
    {
        let mut event_ids = txn.open_table(EVENT_IDS).map_err(db_err)?;
        let mut old = Vec::new();
        for row in event_ids
            .range((0u64, "", "")..(horizon, "", ""))
            .map_err(db_err)?
        {
            let (k, _) = row.map_err(db_err)?;
            let (m, t, id) = k.value();
            old.push((m, t.to_owned(), id.to_owned()));
            if old.len() >= EXPIRE_CHUNK {
                break;
            }
        }
        for (m, t, id) in &old {
            event_ids
                .remove((*m, t.as_str(), id.as_str()))
                .map_err(db_err)?;
        }
        removed += old.len() as u64;
    }
    {
        let mut exp = txn.open_table(ROLLUP_EXP).map_err(db_err)?;
        let mut main = txn.open_table(ROLLUPS).map_err(db_err)?;
        let mut old = Vec::new();
        for row in exp.range((0u64, "")..(horizon, "")).map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (m, t) = k.value();
            old.push((m, t.to_owned()));
            if old.len() >= EXPIRE_CHUNK {
                break;
            }
        }
        for (m, t) in &old {
            exp.remove((*m, t.as_str())).map_err(db_err)?;
            main.remove((t.as_str(), *m)).map_err(db_err)?;
        }
        removed += old.len() as u64;
    }
    {
        let mut total = txn.open_table(CTR_TOTAL).map_err(db_err)?;
        let mut old = Vec::new();
        for row in total
            .range((0u64, 0u64, 0u64, "")..(counter_horizon, 0u64, 0u64, ""))
            .map_err(db_err)?
        {
            let (k, _) = row.map_err(db_err)?;
            let (e, s, w, key) = k.value();
            old.push((e, s, w, key.to_owned()));
            if old.len() >= EXPIRE_CHUNK {
                break;
            }
        }
        for (e, s, w, key) in &old {
            total.remove((*e, *s, *w, key.as_str())).map_err(db_err)?;
        }
        removed += old.len() as u64;
        let mut per_node = txn.open_table(CTR_NODE).map_err(db_err)?;
        let mut old = Vec::new();
        for row in per_node
            .range((0u64, 0u64, 0u64, "", "")..(counter_horizon, 0u64, 0u64, "", ""))
            .map_err(db_err)?
        {
            let (k, _) = row.map_err(db_err)?;
            let (e, s, w, key, node) = k.value();
            old.push((e, s, w, key.to_owned(), node.to_owned()));
            if old.len() >= EXPIRE_CHUNK {
                break;
            }
        }
        for (e, s, w, key, node) in &old {
            per_node
                .remove((*e, *s, *w, key.as_str(), node.as_str()))
                .map_err(db_err)?;
        }
        removed += old.len() as u64;
    }
    txn.commit().map_err(db_err)?;
    Ok(removed)
}

fn read_plan(bytes: &[u8]) -> Result<PlanRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

fn write_plan(txn: &WriteTransaction, rec: &PlanRecord) -> Result<(), StoreError> {
    let mut plans = txn.open_table(PLANS).map_err(db_err)?;
    let mut by_seq = txn.open_table(PLAN_SEQ).map_err(db_err)?;
    if let Some(old) = plans.get(rec.tenant.as_str()).map_err(db_err)? {
        let old = read_plan(old.value())?;
        by_seq.remove(old.seq).map_err(db_err)?;
    }
    let bytes = serde_json::to_vec(rec).map_err(corrupt)?;
    plans
        .insert(rec.tenant.as_str(), bytes.as_slice())
        .map_err(db_err)?;
    by_seq
        .insert(rec.seq, rec.tenant.as_str())
        .map_err(db_err)?;
    Ok(())
}

fn get_plan(db: &Database, tenant: &str) -> Result<Option<PlanRecord>, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let plans = txn.open_table(PLANS).map_err(db_err)?;
    match plans.get(tenant).map_err(db_err)? {
        Some(v) => {
            let rec = read_plan(v.value())?;
            Ok((!rec.deleted).then_some(rec))
        }
        None => Ok(None),
    }
}

impl EmbeddedStore {
    async fn apply_in_writer(
        &self,
        batch: &PreparedBatch,
        now_ms: u64,
    ) -> Result<Applied, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job {
                batch: batch.clone(),
                now_ms,
                reply,
            })
            .map_err(|_| StoreError::Task("writer thread stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Task("writer thread stopped".into()))?
    }
}

impl Store for EmbeddedStore {
    async fn apply_batch(
        &self,
        batch: &PreparedBatch,
        now_ms: u64,
        _retention_ms: u64,
    ) -> Result<BatchOutcome, StoreError> {
        Ok(self.apply_in_writer(batch, now_ms).await?.0)
    }

    async fn apply_batch_with_totals(
        &self,
        batch: &PreparedBatch,
        now_ms: u64,
        _retention_ms: u64,
    ) -> Result<(BatchOutcome, Vec<CounterTotals>), StoreError> {
        self.apply_in_writer(batch, now_ms).await
    }

    async fn counters(
        &self,
        node_id: &str,
        windows: &[CounterDelta],
    ) -> Result<Vec<CounterTotals>, StoreError> {
        let node = node_id.to_owned();
        let windows = windows.to_vec();
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            let total = txn.open_table(CTR_TOTAL).map_err(db_err)?;
            let per_node = txn.open_table(CTR_NODE).map_err(db_err)?;
            read_totals(&total, &per_node, &node, &windows)
        })
        .await
    }

    async fn heartbeat(&self, node_id: &str, now_ms: u64) -> Result<u64, StoreError> {
        let mut nodes = self
            .inner
            .nodes
            .lock()
            .map_err(|_| StoreError::Embedded("node table lock poisoned".into()))?;
        nodes.insert(node_id.to_owned(), now_ms);
        nodes.retain(|_, seen| now_ms.saturating_sub(*seen) <= NODE_TTL_MS);
        Ok(nodes.len() as u64)
    }

    async fn nodes_alive(&self, now_ms: u64) -> Result<u64, StoreError> {
        let nodes = self
            .inner
            .nodes
            .lock()
            .map_err(|_| StoreError::Embedded("node table lock poisoned".into()))?;
        Ok(nodes
            .values()
            .filter(|seen| now_ms.saturating_sub(**seen) <= NODE_TTL_MS)
            .count() as u64)
    }

    async fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Rollup>, StoreError> {
        let tenant = tenant.to_owned();
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            let rollups = txn.open_table(ROLLUPS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in rollups
                .range((tenant.as_str(), from_ms)..(tenant.as_str(), to_ms))
                .map_err(db_err)?
            {
                let (_, v) = row.map_err(db_err)?;
                out.push(serde_json::from_slice::<Rollup>(v.value()).map_err(corrupt)?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_plan(
        &self,
        tenant: &str,
        body: &PlanBody,
        now_ms: u64,
    ) -> Result<PlanRecord, StoreError> {
        let tenant = tenant.to_owned();
        let body = body.clone();
        self.blocking(move |inner| {
            let txn = inner.db.begin_write().map_err(db_err)?;
            let rec = PlanRecord {
                tenant,
                plan: body.plan,
                limits: body.limits,
                seq: next_seq(&txn, META_PLAN_SEQ)?,
                updated_at_ms: now_ms,
                deleted: false,
            };
            write_plan(&txn, &rec)?;
            txn.commit().map_err(db_err)?;
            inner.latest_plan_seq.fetch_max(rec.seq, Ordering::AcqRel);
            Ok(rec)
        })
        .await
    }

    async fn get_plan(&self, tenant: &str) -> Result<Option<PlanRecord>, StoreError> {
        let tenant = tenant.to_owned();
        self.blocking(move |inner| get_plan(&inner.db, &tenant))
            .await
    }

    async fn delete_plan(
        &self,
        tenant: &str,
        now_ms: u64,
    ) -> Result<Option<PlanRecord>, StoreError> {
        let tenant = tenant.to_owned();
        self.blocking(move |inner| {
            let txn = inner.db.begin_write().map_err(db_err)?;
            let existing = {
                let plans = txn.open_table(PLANS).map_err(db_err)?;
                let v = plans.get(tenant.as_str()).map_err(db_err)?;
                match v {
                    Some(v) => Some(read_plan(v.value())?),
                    None => None,
                }
            };
            let Some(old) = existing.filter(|r| !r.deleted) else {
                return Ok(None);
            };
            let tomb = PlanRecord {
                seq: next_seq(&txn, META_PLAN_SEQ)?,
                updated_at_ms: now_ms,
                deleted: true,
                plan: String::new(),
                limits: BTreeMap::new(),
                ..old
            };
            write_plan(&txn, &tomb)?;
            txn.commit().map_err(db_err)?;
            inner.latest_plan_seq.fetch_max(tomb.seq, Ordering::AcqRel);
            Ok(Some(tomb))
        })
        .await
    }

    async fn plans_since(&self, since: u64, limit: usize) -> Result<Feed<PlanRecord>, StoreError> {
        if since >= self.inner.latest_plan_seq.load(Ordering::Acquire) {
            return Ok(Feed {
                items: Vec::new(),
                next_seq: since,
            });
        }
        self.blocking(move |inner| {
            let latest = current_seq(&inner.db, META_PLAN_SEQ)?;
            let txn = inner.db.begin_read().map_err(db_err)?;
            let by_seq = txn.open_table(PLAN_SEQ).map_err(db_err)?;
            let plans = txn.open_table(PLANS).map_err(db_err)?;
            let mut items = Vec::new();
            for row in by_seq.range(since.saturating_add(1)..).map_err(db_err)? {
                if items.len() >= limit {
                    break;
                }
                let (_, tenant) = row.map_err(db_err)?;
                if let Some(v) = plans.get(tenant.value()).map_err(db_err)? {
                    items.push(read_plan(v.value())?);
                }
            }
            let next_seq = feed_next(
                items.last().map(|r| r.seq),
                items.len() >= limit,
                latest,
                since,
            );
            Ok(Feed { items, next_seq })
        })
        .await
    }

    async fn add_purge(&self, body: &PurgeBody, now_ms: u64) -> Result<PurgeRecord, StoreError> {
        let body = body.clone();
        self.blocking(move |inner| {
            let txn = inner.db.begin_write().map_err(db_err)?;
            let seq = next_seq(&txn, META_PURGE_SEQ)?;
            let rec = PurgeRecord {
                seq,
                by: body.by,
                value: body.value,
                mode: body.mode,
                created_at_ms: now_ms,
            };
            {
                let mut purges = txn.open_table(PURGES).map_err(db_err)?;
                let bytes = serde_json::to_vec(&rec).map_err(corrupt)?;
                purges.insert(seq, bytes.as_slice()).map_err(db_err)?;
                // One in, one out: the feed keeps the newest PURGES_KEPT.
                if seq > PURGES_KEPT {
                    purges.remove(seq - PURGES_KEPT).map_err(db_err)?;
                }
            }
            txn.commit().map_err(db_err)?;
            inner.latest_purge_seq.fetch_max(rec.seq, Ordering::AcqRel);
            Ok(rec)
        })
        .await
    }

    async fn purges_since(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Feed<PurgeRecord>, StoreError> {
        if since >= self.inner.latest_purge_seq.load(Ordering::Acquire) {
            return Ok(Feed {
                items: Vec::new(),
                next_seq: since,
            });
        }
        self.blocking(move |inner| {
            let latest = current_seq(&inner.db, META_PURGE_SEQ)?;
            let txn = inner.db.begin_read().map_err(db_err)?;
            let purges = txn.open_table(PURGES).map_err(db_err)?;
            let mut items = Vec::new();
            for row in purges.range(since.saturating_add(1)..).map_err(db_err)? {
                if items.len() >= limit {
                    break;
                }
                let (_, v) = row.map_err(db_err)?;
                items.push(serde_json::from_slice::<PurgeRecord>(v.value()).map_err(corrupt)?);
            }
            let next_seq = feed_next(
                items.last().map(|r| r.seq),
                items.len() >= limit,
                latest,
                since,
            );
            Ok(Feed { items, next_seq })
        })
        .await
    }

    async fn expire(&self, now_ms: u64, retention_ms: u64) -> Result<u64, StoreError> {
        self.blocking(move |inner| {
            let mut total = 0;
            loop {
                let n = expire_once(inner, now_ms, retention_ms)?;
                total += n;
                if n == 0 {
                    return Ok(total);
                }
            }
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|inner| {
            inner.db.begin_read().map_err(db_err)?;
            Ok(())
        })
        .await
    }
}
