//! Shared store on Redis, so several sidecar instances agree on counters, event
//! de-duplication, rollups, overrides and purges. A batch is applied by one Lua script,
//! which Redis runs atomically: the batch-id check and every write of the batch happen
//! together or not at all. Old data expires by TTL (`PEXPIREAT`), not by a sweep.
//! Durability is Redis' own (AOF/RDB settings of the server).
//!
//! Keys (tenants and node ids have no `:`, so every key parses one way):
//! - `tg:batch:{node}:{batch_id}` string, TTL = retention
//! - `tg:ctr:{window_ms}:{start_ms}:{key}` hash node -> total, `~total` -> fleet total
//! - `tg:nodes` zset node -> last sync ms
//! - `tg:ev:{tenant}:{minute_ms}:{event_id}` string, expires with the event's minute (a
//!   node re-sends a record unchanged, so its minute is part of its identity, as in the
//!   embedded store)
//! - `tg:use:{tenant}:{minute_ms}` hash `count`, `lat`, `s:2xx`.., `r:{route}`.., `nroutes`
//! - `tg:umin:{tenant}` zset of the minutes that have a rollup
//! - `tg:plans` hash tenant -> JSON record, `tg:planseq` zset tenant -> seq,
//!   `tg:plan:seq` counter
//! - `tg:purges` zset seq -> "seq JSON", `tg:purge:seq` counter

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use serde::Serialize;

use super::{BatchOutcome, COUNTER_GRACE_MS, CounterTotals, Feed, Store, StoreError, feed_next};
use crate::model::{
    CounterDelta, MAX_ROUTES_PER_MINUTE, MINUTE_MS, NODE_TTL_MS, OTHER_ROUTE, PURGES_KEPT,
    PlanBody, PlanRecord, PreparedBatch, PurgeBody, PurgeRecord, Rollup,
};

const NODES: &str = "tg:nodes";
const PLANS: &str = "tg:plans";
const PLAN_SEQ_Z: &str = "tg:planseq";
const PLAN_SEQ: &str = "tg:plan:seq";
const PURGES: &str = "tg:purges";
const PURGE_SEQ: &str = "tg:purge:seq";
const TOTAL_FIELD: &str = "~total";

/// Numbers travel as strings: Lua numbers are doubles and `cjson` would print large
/// ones in exponent form.
const BATCH_LUA: &str = r#"
local b = cjson.decode(ARGV[1])
if not redis.call('SET', b.batch_key, '1', 'NX', 'PXAT', b.batch_exp) then
  return {1, 0, 0}
end
for _, c in ipairs(b.counters) do
  redis.call('HINCRBY', c[1], c[2], c[3])
  redis.call('HINCRBY', c[1], '~total', c[3])
  redis.call('PEXPIREAT', c[1], c[4])
end
local acc, dup = 0, 0
local cap = tonumber(b.cap)
for _, e in ipairs(b.events) do
  if redis.call('SET', e[1], '1', 'NX', 'PXAT', e[2]) then
    acc = acc + 1
    local r = e[3]
    redis.call('HINCRBY', r, 'count', 1)
    redis.call('HINCRBY', r, 'lat', e[8])
    redis.call('HINCRBY', r, e[6], 1)
    if redis.call('HEXISTS', r, e[7]) == 1 then
      redis.call('HINCRBY', r, e[7], 1)
    elseif tonumber(redis.call('HGET', r, 'nroutes') or '0') < cap then
      redis.call('HINCRBY', r, e[7], 1)
      redis.call('HINCRBY', r, 'nroutes', 1)
    else
      redis.call('HINCRBY', r, b.other, 1)
    end
    redis.call('PEXPIREAT', r, e[2])
    redis.call('ZADD', e[4], e[5], e[5])
    redis.call('PEXPIRE', e[4], b.index_ttl)
  else
    dup = dup + 1
  end
end
for _, t in ipairs(b.trims) do
  redis.call('ZREMRANGEBYSCORE', t[1], '-inf', '(' .. t[2])
end
return {0, acc, dup}
"#;

/// KEYS: seq counter, record hash, seq zset. ARGV: tenant, record JSON.
const PUT_PLAN_LUA: &str = r#"
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return seq
"#;

/// Like PUT_PLAN_LUA, but only when a live (not deleted) record exists; 0 otherwise.
/// serde_json escapes quotes inside strings, so the literal can only be the field.
const DELETE_PLAN_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if (not cur) or string.find(cur, '"deleted":true', 1, true) then return 0 end
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return seq
"#;

/// KEYS: seq counter, purge zset. ARGV: record JSON, how many to keep.
const PURGE_LUA: &str = r#"
local seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], seq, seq .. ' ' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[2]) + 1))
return seq
"#;

#[derive(Serialize)]
struct LuaBatch {
    batch_key: String,
    batch_exp: String,
    /// [hash key, node, delta, expire_at_ms]
    counters: Vec<[String; 4]>,
    /// [dedupe key, expire_at_ms, rollup key, minute index key, minute_ms,
    ///  status field, route field, latency_ms]
    events: Vec<[String; 8]>,
    /// [minute index key, oldest minute kept]
    trims: Vec<[String; 2]>,
    cap: String,
    other: String,
    index_ttl: String,
}

#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    batch: Script,
    put_plan: Script,
    delete_plan: Script,
    purge: Script,
}

fn counter_key(c: &CounterDelta) -> String {
    format!("tg:ctr:{}:{}:{}", c.window_ms, c.window_start_ms, c.key)
}

fn use_key(tenant: &str, minute_ms: u64) -> String {
    format!("tg:use:{tenant}:{minute_ms}")
}

fn index_key(tenant: &str) -> String {
    format!("tg:umin:{tenant}")
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn rollup_from_hash(minute_ms: u64, h: &HashMap<String, String>) -> Result<Rollup, StoreError> {
    let num = |v: &String| v.parse::<u64>().map_err(corrupt);
    let mut r = Rollup {
        minute_ms,
        ..Rollup::default()
    };
    for (k, v) in h {
        if k == "count" {
            r.count = num(v)?;
        } else if k == "lat" {
            r.latency_ms_sum = num(v)?;
        } else if let Some(class) = k.strip_prefix("s:") {
            r.status.insert(class.to_owned(), num(v)?);
        } else if let Some(route) = k.strip_prefix("r:") {
            r.routes.insert(route.to_owned(), num(v)?);
        }
    }
    Ok(r)
}

impl RedisStore {
    /// Connects (failing fast when Redis is unreachable at start); later outages make
    /// calls fail with short timeouts while the manager reconnects in the background.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let con = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            con,
            batch: Script::new(BATCH_LUA),
            put_plan: Script::new(PUT_PLAN_LUA),
            delete_plan: Script::new(DELETE_PLAN_LUA),
            purge: Script::new(PURGE_LUA),
        })
    }

    async fn plan_record(&self, tenant: &str) -> Result<Option<PlanRecord>, StoreError> {
        let mut con = self.con.clone();
        let (json, seq): (Option<String>, Option<f64>) = redis::pipe()
            .cmd("HGET")
            .arg(PLANS)
            .arg(tenant)
            .cmd("ZSCORE")
            .arg(PLAN_SEQ_Z)
            .arg(tenant)
            .query_async(&mut con)
            .await?;
        let Some(json) = json else { return Ok(None) };
        let mut rec: PlanRecord = serde_json::from_str(&json).map_err(corrupt)?;
        rec.seq = seq.unwrap_or(0.0) as u64;
        Ok(Some(rec))
    }

    async fn write_plan(&self, script: &Script, rec: &PlanRecord) -> Result<u64, StoreError> {
        let mut con = self.con.clone();
        let json = serde_json::to_string(rec).map_err(corrupt)?;
        let seq: u64 = script
            .key(PLAN_SEQ)
            .key(PLANS)
            .key(PLAN_SEQ_Z)
            .arg(&rec.tenant)
            .arg(json)
            .invoke_async(&mut con)
            .await?;
        Ok(seq)
    }
}

impl Store for RedisStore {
    async fn apply_batch(
        &self,
        batch: &PreparedBatch,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<BatchOutcome, StoreError> {
        let mut trims: HashMap<&str, ()> = HashMap::new();
        let lua = LuaBatch {
            batch_key: format!("tg:batch:{}:{}", batch.node_id, batch.batch_id),
            batch_exp: (now_ms + retention_ms).to_string(),
            counters: batch
                .counters
                .iter()
                .map(|c| {
                    [
                        counter_key(c),
                        batch.node_id.clone(),
                        c.delta.to_string(),
                        (c.window_start_ms + c.window_ms + COUNTER_GRACE_MS).to_string(),
                    ]
                })
                .collect(),
            events: batch
                .events
                .iter()
                .map(|e| {
                    trims.insert(e.tenant.as_str(), ());
                    [
                        format!("tg:ev:{}:{}:{}", e.tenant, e.minute_ms, e.event_id),
                        (e.minute_ms + retention_ms).to_string(),
                        use_key(&e.tenant, e.minute_ms),
                        index_key(&e.tenant),
                        e.minute_ms.to_string(),
                        format!("s:{}", e.status_class),
                        format!("r:{}", e.route),
                        e.latency_ms.to_string(),
                    ]
                })
                .collect(),
            trims: trims
                .keys()
                .map(|t| {
                    [
                        index_key(t),
                        now_ms.saturating_sub(retention_ms).to_string(),
                    ]
                })
                .collect(),
            cap: MAX_ROUTES_PER_MINUTE.to_string(),
            other: format!("r:{OTHER_ROUTE}"),
            index_ttl: (retention_ms + MINUTE_MS).to_string(),
        };
        let json = serde_json::to_string(&lua).map_err(corrupt)?;
        let mut con = self.con.clone();
        let (dup, acc, dup_events): (u64, u64, u64) =
            self.batch.arg(json).invoke_async(&mut con).await?;
        Ok(BatchOutcome {
            duplicate: dup == 1,
            events_accepted: acc,
            events_duplicate: dup_events,
        })
    }

    async fn counters(
        &self,
        node_id: &str,
        windows: &[CounterDelta],
    ) -> Result<Vec<CounterTotals>, StoreError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for c in windows {
            pipe.cmd("HMGET")
                .arg(counter_key(c))
                .arg(TOTAL_FIELD)
                .arg(node_id);
        }
        let mut con = self.con.clone();
        let rows: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut con).await?;
        Ok(rows
            .into_iter()
            .map(|(total, own)| CounterTotals {
                fleet_total: total.unwrap_or(0),
                own: own.unwrap_or(0),
            })
            .collect())
    }

    async fn heartbeat(&self, node_id: &str, now_ms: u64) -> Result<u64, StoreError> {
        let mut con = self.con.clone();
        let cutoff = now_ms.saturating_sub(NODE_TTL_MS);
        let (_, _, n): (i64, i64, u64) = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(NODES)
            .arg(now_ms)
            .arg(node_id)
            .cmd("ZREMRANGEBYSCORE")
            .arg(NODES)
            .arg("-inf")
            .arg(format!("({cutoff}"))
            .cmd("ZCARD")
            .arg(NODES)
            .query_async(&mut con)
            .await?;
        Ok(n)
    }

    async fn nodes_alive(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut con = self.con.clone();
        let n: u64 = redis::cmd("ZCOUNT")
            .arg(NODES)
            .arg(now_ms.saturating_sub(NODE_TTL_MS))
            .arg("+inf")
            .query_async(&mut con)
            .await?;
        Ok(n)
    }

    async fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Rollup>, StoreError> {
        let mut con = self.con.clone();
        let minutes: Vec<u64> = redis::cmd("ZRANGEBYSCORE")
            .arg(index_key(tenant))
            .arg(from_ms)
            .arg(format!("({to_ms}"))
            .query_async(&mut con)
            .await?;
        if minutes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for m in &minutes {
            pipe.cmd("HGETALL").arg(use_key(tenant, *m));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut con).await?;
        let mut out = Vec::with_capacity(minutes.len());
        for (m, h) in minutes.iter().zip(hashes) {
            // The index can outlive an expired rollup by up to a minute.
            if !h.is_empty() {
                out.push(rollup_from_hash(*m, &h)?);
            }
        }
        Ok(out)
    }

    async fn put_plan(
        &self,
        tenant: &str,
        body: &PlanBody,
        now_ms: u64,
    ) -> Result<PlanRecord, StoreError> {
        let mut rec = PlanRecord {
            tenant: tenant.to_owned(),
            plan: body.plan.clone(),
            limits: body.limits.clone(),
            seq: 0,
            updated_at_ms: now_ms,
            deleted: false,
        };
        rec.seq = self.write_plan(&self.put_plan, &rec).await?;
        Ok(rec)
    }

    async fn get_plan(&self, tenant: &str) -> Result<Option<PlanRecord>, StoreError> {
        Ok(self.plan_record(tenant).await?.filter(|r| !r.deleted))
    }

    async fn delete_plan(
        &self,
        tenant: &str,
        now_ms: u64,
    ) -> Result<Option<PlanRecord>, StoreError> {
        let mut tomb = PlanRecord {
            tenant: tenant.to_owned(),
            plan: String::new(),
            limits: Default::default(),
            seq: 0,
            updated_at_ms: now_ms,
            deleted: true,
        };
        match self.write_plan(&self.delete_plan, &tomb).await? {
            0 => Ok(None),
            seq => {
                tomb.seq = seq;
                Ok(Some(tomb))
            }
        }
    }

    async fn plans_since(&self, since: u64, limit: usize) -> Result<Feed<PlanRecord>, StoreError> {
        let mut con = self.con.clone();
        let (latest, page): (Option<u64>, Vec<(String, f64)>) = redis::pipe()
            .cmd("GET")
            .arg(PLAN_SEQ)
            .cmd("ZRANGEBYSCORE")
            .arg(PLAN_SEQ_Z)
            .arg(format!("({since}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut con)
            .await?;
        let mut items = Vec::with_capacity(page.len());
        if !page.is_empty() {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(PLANS);
            for (tenant, _) in &page {
                cmd.arg(tenant);
            }
            let records: Vec<Option<String>> = cmd.query_async(&mut con).await?;
            for ((_, seq), json) in page.iter().zip(records) {
                if let Some(json) = json {
                    let mut rec: PlanRecord = serde_json::from_str(&json).map_err(corrupt)?;
                    rec.seq = *seq as u64;
                    items.push(rec);
                }
            }
        }
        let next_seq = feed_next(
            items.last().map(|r| r.seq),
            page.len() >= limit,
            latest.unwrap_or(0),
            since,
        );
        Ok(Feed { items, next_seq })
    }

    async fn add_purge(&self, body: &PurgeBody, now_ms: u64) -> Result<PurgeRecord, StoreError> {
        let mut rec = PurgeRecord {
            seq: 0,
            by: body.by,
            value: body.value.clone(),
            mode: body.mode,
            created_at_ms: now_ms,
        };
        let json = serde_json::to_string(&rec).map_err(corrupt)?;
        let mut con = self.con.clone();
        rec.seq = self
            .purge
            .key(PURGE_SEQ)
            .key(PURGES)
            .arg(json)
            .arg(PURGES_KEPT)
            .invoke_async(&mut con)
            .await?;
        Ok(rec)
    }

    async fn purges_since(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Feed<PurgeRecord>, StoreError> {
        let mut con = self.con.clone();
        let (latest, page): (Option<u64>, Vec<String>) = redis::pipe()
            .cmd("GET")
            .arg(PURGE_SEQ)
            .cmd("ZRANGEBYSCORE")
            .arg(PURGES)
            .arg(format!("({since}"))
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut con)
            .await?;
        let mut items = Vec::with_capacity(page.len());
        for member in &page {
            let (seq, json) = member
                .split_once(' ')
                .ok_or_else(|| corrupt("purge member without sequence"))?;
            let mut rec: PurgeRecord = serde_json::from_str(json).map_err(corrupt)?;
            rec.seq = seq.parse().map_err(corrupt)?;
            items.push(rec);
        }
        let next_seq = feed_next(
            items.last().map(|r| r.seq),
            items.len() >= limit,
            latest.unwrap_or(0),
            since,
        );
        Ok(Feed { items, next_seq })
    }

    async fn expire(&self, now_ms: u64, _retention_ms: u64) -> Result<u64, StoreError> {
        // Data keys carry TTLs; only the node set needs trimming.
        let mut con = self.con.clone();
        let n: u64 = redis::cmd("ZREMRANGEBYSCORE")
            .arg(NODES)
            .arg("-inf")
            .arg(format!("({}", now_ms.saturating_sub(NODE_TTL_MS)))
            .query_async(&mut con)
            .await?;
        Ok(n)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: String = redis::cmd("PING").query_async(&mut con).await?;
        Ok(())
    }
}
