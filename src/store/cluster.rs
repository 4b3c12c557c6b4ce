//! The cluster's shared state in Redis, from a task worker: the presence hashes of PROTOCOL.md
//! section 6 (`ws_clientInfo`, `ws_fdInfo:{ip}{port}`), one heartbeat key per live node, and
//! routing by pub/sub on one channel per node. Each change is one Lua script: atomic, and one
//! round trip.

use super::redis::RedisStore;
use super::StoreError;
use crate::config::Config;
use crate::model::{NodeSeen, PresenceChange, Uid};
use redis::Script;

pub const CLIENT_INFO: &str = "ws_clientInfo";
const NODES: &str = "wspush:nodes";
pub(super) const ALIVE_PREFIX: &str = "wspush:alive:";
const NODE_ID_PREFIX: &str = "wspush:node_id:";
pub const CHANNEL_PREFIX: &str = "wspush:node:";
pub const BROADCAST_CHANNEL: &str = "wspush:broadcast";

/// KEYS: clientInfo, fdInfo. ARGV: uid, source, entry, fd, fd entry, ip, port, channel prefix.
/// Registers the connection; if the same uid and source was on another node, tells that node.
const ONLINE: &str = r"
local obj = {}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, v = pcall(cjson.decode, cur)
  if ok and type(v) == 'table' then obj = v end
end
local old = obj[ARGV[2]]
local new = cjson.decode(ARGV[3])
if type(old) == 'table' and (tostring(old['ip']) ~= ARGV[6] or tostring(old['port']) ~= ARGV[7]) then
  local same = old['device'] ~= nil and old['device'] == new['device']
  redis.call('PUBLISH', ARGV[8] .. tostring(old['ip']) .. ':' .. tostring(old['port']),
    cjson.encode({t = 'displace', uid = ARGV[1], source = ARGV[2], fd = old['fd'], same_device = same}))
end
obj[ARGV[2]] = new
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(obj))
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
return 1
";

/// KEYS: clientInfo, fdInfo. ARGV: uid, source, fd, ip, port. Removes the entry only if it is
/// still this connection's: a newer login of the same source (here or elsewhere) stays.
const OFFLINE: &str = r"
redis.call('HDEL', KEYS[2], ARGV[3])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local ok, obj = pcall(cjson.decode, cur)
if not ok or type(obj) ~= 'table' then return 0 end
local e = obj[ARGV[2]]
if type(e) == 'table' and tostring(e['fd']) == ARGV[3] and tostring(e['ip']) == ARGV[4]
    and tostring(e['port']) == ARGV[5] then
  obj[ARGV[2]] = nil
  if next(obj) == nil then redis.call('HDEL', KEYS[1], ARGV[1])
  else redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(obj)) end
  return 1
end
return 0
";

/// KEYS: clientInfo. ARGV: uid, payload, ip, port, include self (1/0), alive prefix, channel
/// prefix. Publishes to each live node holding the uid; returns how many nodes took it.
const ROUTE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local ok, obj = pcall(cjson.decode, cur)
if not ok or type(obj) ~= 'table' then return 0 end
local seen, reached = {}, 0
for _, e in pairs(obj) do
  if type(e) == 'table' then
    local node = tostring(e['ip']) .. ':' .. tostring(e['port'])
    local is_self = tostring(e['ip']) == ARGV[3] and tostring(e['port']) == ARGV[4]
    if not seen[node] and (ARGV[5] == '1' or not is_self) then
      seen[node] = true
      if is_self or redis.call('EXISTS', ARGV[6] .. node) == 1 then
        reached = reached + redis.call('PUBLISH', ARGV[7] .. node, ARGV[2])
      end
    end
  end
end
return reached
";

/// KEYS: clientInfo. ARGV: uid, ip, port, alive prefix. Sources on other live nodes.
const REMOTE_SOURCES: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {} end
local ok, obj = pcall(cjson.decode, cur)
if not ok or type(obj) ~= 'table' then return {} end
local out = {}
for src, e in pairs(obj) do
  if type(e) == 'table' and not (tostring(e['ip']) == ARGV[2] and tostring(e['port']) == ARGV[3]) then
    if redis.call('EXISTS', ARGV[4] .. tostring(e['ip']) .. ':' .. tostring(e['port'])) == 1 then
      table.insert(out, src)
    end
  end
end
return out
";

/// KEYS: clientInfo, fdInfo of the node. ARGV: ip, port. Removes every trace of one node.
const PURGE: &str = r"
redis.call('DEL', KEYS[2])
local cursor = '0'
repeat
  local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 500)
  cursor = r[1]
  local kv = r[2]
  for i = 1, #kv, 2 do
    local ok, obj = pcall(cjson.decode, kv[i + 1])
    if ok and type(obj) == 'table' then
      local changed = false
      for src, e in pairs(obj) do
        if type(e) == 'table' and tostring(e['ip']) == ARGV[1] and tostring(e['port']) == ARGV[2] then
          obj[src] = nil
          changed = true
        end
      end
      if changed then
        if next(obj) == nil then redis.call('HDEL', KEYS[1], kv[i])
        else redis.call('HSET', KEYS[1], kv[i], cjson.encode(obj)) end
      end
    end
  end
until cursor == '0'
return 1
";

/// This node, as the other nodes and the presence hashes name it.
#[derive(Debug, Clone)]
pub struct NodeName {
    pub ip: String,
    pub port: u16,
}

impl NodeName {
    pub fn from_config(config: &Config) -> NodeName {
        let (ip, port) = config.node_address();
        NodeName { ip, port }
    }

    /// `ip:port`, the node's name in channels and heartbeat keys.
    pub fn id(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// `ws_fdInfo:{ip}{port}`, as the original names it.
    pub fn fd_info_key(&self) -> String {
        fd_info_key(&self.ip, &self.port.to_string())
    }

    pub fn channel(&self) -> String {
        format!("{CHANNEL_PREFIX}{}", self.id())
    }
}

fn fd_info_key(ip: &str, port: &str) -> String {
    format!("ws_fdInfo:{ip}{port}")
}

pub struct ClusterStore {
    pub(super) redis: RedisStore,
    pub(super) node: NodeName,
    ttl: u64,
    node_id: u16,
}

impl ClusterStore {
    pub fn open(config: &Config) -> Result<ClusterStore, StoreError> {
        Ok(ClusterStore {
            redis: RedisStore::open(config)?,
            node: NodeName::from_config(config),
            ttl: config.redis.node_ttl,
            node_id: config.server.node_id,
        })
    }

    /// All changes of one batch in one pipeline.
    pub fn presence(&mut self, changes: &[PresenceChange]) -> Result<(), StoreError> {
        let node = &self.node;
        let port = node.port.to_string();
        let fd_key = node.fd_info_key();
        let mut pipe = redis::pipe();
        for c in changes {
            let uid = c.uid.to_string();
            let source = c.source.as_str();
            if c.online {
                let mut entry = serde_json::json!({"time": c.time, "fd": c.conn, "ip": node.ip, "port": node.port});
                if let Some(d) = &c.device {
                    entry["device"] = d.as_str().into();
                }
                if let Some(ip) = c.client {
                    entry["client_ip"] = ip.to_string().into();
                }
                let fd_entry = serde_json::json!({"uid": uid, "isServer": false, "source": source, "time": c.time});
                pipe.cmd("EVAL")
                    .arg(ONLINE)
                    .arg(2)
                    .arg(CLIENT_INFO)
                    .arg(&fd_key)
                    .arg(&uid)
                    .arg(source)
                    .arg(entry.to_string())
                    .arg(c.conn.0)
                    .arg(fd_entry.to_string())
                    .arg(&node.ip)
                    .arg(&port)
                    .arg(CHANNEL_PREFIX)
                    .ignore();
            } else {
                pipe.cmd("EVAL")
                    .arg(OFFLINE)
                    .arg(2)
                    .arg(CLIENT_INFO)
                    .arg(&fd_key)
                    .arg(&uid)
                    .arg(source)
                    .arg(c.conn.0)
                    .arg(&node.ip)
                    .arg(&port)
                    .ignore();
            }
        }
        self.redis.with(|c| pipe.query::<()>(c))
    }

    /// Publishes `payload` to each live node holding `uid`; returns how many took it.
    pub fn route(
        &mut self,
        uid: Uid,
        payload: &[u8],
        include_self: bool,
    ) -> Result<u32, StoreError> {
        let script = Script::new(ROUTE);
        let mut call = script.key(CLIENT_INFO);
        call.arg(uid.to_string())
            .arg(payload)
            .arg(&self.node.ip)
            .arg(self.node.port.to_string())
            .arg(if include_self { "1" } else { "0" })
            .arg(ALIVE_PREFIX)
            .arg(CHANNEL_PREFIX);
        self.redis.with(|c| call.invoke::<u32>(c))
    }

    pub fn broadcast(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        self.redis.with(|c| {
            redis::cmd("PUBLISH")
                .arg(BROADCAST_CHANNEL)
                .arg(payload)
                .query::<()>(c)
        })
    }

    pub fn remote_sources(&mut self, uid: Uid) -> Result<Vec<String>, StoreError> {
        let script = Script::new(REMOTE_SOURCES);
        let mut call = script.key(CLIENT_INFO);
        call.arg(uid.to_string())
            .arg(&self.node.ip)
            .arg(self.node.port.to_string())
            .arg(ALIVE_PREFIX);
        self.redis.with(|c| call.invoke::<Vec<String>>(c))
    }

    /// Refreshes this node's heartbeat and node id claim; purges nodes whose heartbeat lapsed.
    /// Answers the live nodes, with their connections and heartbeats' time left. Err(NodeIdInUse)
    /// when another live node holds this node id.
    pub fn heartbeat(&mut self) -> Result<Vec<NodeSeen>, StoreError> {
        let me = self.node.id();
        let (ttl, id_key) = (self.ttl, format!("{NODE_ID_PREFIX}{}", self.node_id));
        let holder: Option<String> = self.redis.with(|c| {
            redis::pipe()
                .cmd("SET")
                .arg(format!("{ALIVE_PREFIX}{me}"))
                .arg(1)
                .arg("EX")
                .arg(ttl)
                .ignore()
                .cmd("SADD")
                .arg(NODES)
                .arg(&me)
                .ignore()
                .cmd("SET")
                .arg(&id_key)
                .arg(&me)
                .arg("NX")
                .arg("EX")
                .arg(ttl)
                .ignore()
                .cmd("GET")
                .arg(&id_key)
                .query::<(Option<String>,)>(c)
                .map(|(h,)| h)
        })?;
        match holder {
            Some(holder) if holder != me => {
                return Err(StoreError::NodeIdInUse {
                    node_id: self.node_id,
                    holder,
                })
            }
            _ => {
                self.redis
                    .with(|c| redis::cmd("EXPIRE").arg(&id_key).arg(ttl).query::<()>(c))?;
            }
        }
        let nodes: Vec<String> = self
            .redis
            .with(|c| redis::cmd("SMEMBERS").arg(NODES).query(c))?;
        // Every node's heartbeat time left (-2: none, the node is dead) and connection count,
        // in one round trip.
        let mut pipe = redis::pipe();
        for node in &nodes {
            let (ip, port) = node.rsplit_once(':').unwrap_or((node, ""));
            pipe.cmd("PTTL")
                .arg(format!("{ALIVE_PREFIX}{node}"))
                .cmd("HLEN")
                .arg(fd_info_key(ip, port));
        }
        let answers: Vec<i64> = self.redis.with(|c| pipe.query(c))?;
        let mut alive = Vec::with_capacity(nodes.len());
        for (node, answer) in nodes.into_iter().zip(answers.chunks(2)) {
            let (ttl, connections) = (answer[0], answer.get(1).copied().unwrap_or(0));
            if ttl == -2 && node != me {
                log::warn!(
                    "node {node} stopped sending heartbeats: removing its users from presence"
                );
                self.purge(&node)?;
                self.purge_group_nodes(&node)?;
                self.redis
                    .with(|c| redis::cmd("SREM").arg(NODES).arg(&node).query::<()>(c))?;
                continue;
            }
            alive.push(NodeSeen {
                node,
                connections: u64::try_from(connections).unwrap_or(0),
                heartbeat_ttl_ms: ttl,
            });
        }
        Ok(alive)
    }

    pub fn purge_self(&mut self) -> Result<(), StoreError> {
        self.purge(&self.node.id())?;
        self.purge_group_nodes(&self.node.id())
    }

    fn purge(&mut self, node: &str) -> Result<(), StoreError> {
        let Some((ip, port)) = node.rsplit_once(':') else {
            return Ok(());
        };
        let script = Script::new(PURGE);
        let mut call = script.key(CLIENT_INFO);
        call.key(fd_info_key(ip, port)).arg(ip).arg(port);
        self.redis.with(|c| call.invoke::<()>(c))
    }
}
