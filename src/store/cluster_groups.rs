//! Groups in Redis, from a task worker: membership (a set of uids per group, and a set naming
//! every group), changes told to every node's table on the broadcast channel, and which nodes
//! have a member online (a set of nodes per group, kept by each node for itself), so that a
//! group message is published only to those nodes.

use super::cluster::{ClusterStore, ALIVE_PREFIX, CHANNEL_PREFIX, CLIENT_INFO};
use super::StoreError;
use crate::ipc::ClusterMessage;
use crate::model::Uid;
use redis::Script;

/// A set of every group's name, and one set of member uids per group.
const GROUPS: &str = "wspush:groups";
const GROUP_PREFIX: &str = "wspush:group:";
/// Per group, the nodes with a member online; per node, the groups it is in such a set of.
const GROUP_NODES_PREFIX: &str = "wspush:group_nodes:";
const NODE_GROUPS_PREFIX: &str = "wspush:node_groups:";
/// Uids one `ONLINE_OF` call looks up.
const ONLINE_OF_CHUNK: usize = 1000;

/// KEYS: clientInfo. ARGV: alive prefix, then uids. The uids with an entry on a live node.
const ONLINE_OF: &str = r"
local out = {}
for i = 2, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    local ok, obj = pcall(cjson.decode, cur)
    if ok and type(obj) == 'table' then
      for _, e in pairs(obj) do
        if type(e) == 'table' and redis.call('EXISTS', ARGV[1] .. tostring(e['ip']) .. ':' .. tostring(e['port'])) == 1 then
          table.insert(out, ARGV[i])
          break
        end
      end
    end
  end
end
return out
";

/// KEYS: the group's node set. ARGV: payload, this node, alive prefix, channel prefix.
/// Publishes to every other live node with a member of the group online; answers how many.
const GROUP_ROUTE: &str = r"
local reached = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. node) == 1 then
    reached = reached + redis.call('PUBLISH', ARGV[4] .. node, ARGV[1])
  end
end
return reached
";

/// KEYS: the node's group set. ARGV: node, group nodes prefix. Takes the node out of every
/// group's node set.
const PURGE_GROUP_NODES: &str = r"
for _, g in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('SREM', ARGV[2] .. g, ARGV[1])
end
redis.call('DEL', KEYS[1])
return 1
";

impl ClusterStore {
    /// Adds members to a group; every node's table hears of it. Answers the members after.
    pub fn group_join(&mut self, group: &str, uids: &[Uid]) -> Result<u64, StoreError> {
        let key = format!("{GROUP_PREFIX}{group}");
        let members: Vec<String> = uids.iter().map(Uid::to_string).collect();
        let mut pipe = redis::pipe();
        if !members.is_empty() {
            pipe.cmd("SADD").arg(&key).arg(&members).ignore();
            pipe.cmd("SADD").arg(GROUPS).arg(group).ignore();
        }
        pipe.cmd("SCARD").arg(&key);
        let (n,): (u64,) = self.redis.with(|c| pipe.query(c))?;
        self.group_changed(true, group, uids)?;
        Ok(n)
    }

    /// Removes members from a group (the group goes with its last member).
    pub fn group_leave(&mut self, group: &str, uids: &[Uid]) -> Result<u64, StoreError> {
        let key = format!("{GROUP_PREFIX}{group}");
        let members: Vec<String> = uids.iter().map(Uid::to_string).collect();
        let mut pipe = redis::pipe();
        if !members.is_empty() {
            pipe.cmd("SREM").arg(&key).arg(&members).ignore();
        }
        pipe.cmd("SCARD").arg(&key);
        let (n,): (u64,) = self.redis.with(|c| pipe.query(c))?;
        if n == 0 {
            self.redis
                .with(|c| redis::cmd("SREM").arg(GROUPS).arg(group).query::<()>(c))?;
        }
        self.group_changed(false, group, uids)?;
        Ok(n)
    }

    /// Tells every node (this one too) that a group's membership changed.
    fn group_changed(&mut self, join: bool, group: &str, uids: &[Uid]) -> Result<(), StoreError> {
        let origin = self.node.id();
        let payload = ClusterMessage::Members {
            origin: &origin,
            group,
            join,
            uids: uids.to_vec(),
        }
        .to_json();
        self.broadcast(&payload)
    }

    /// Which of `uids` have a connection on a live node.
    /// A script call per `ONLINE_OF_CHUNK` uids, so that a large group does not hold Redis.
    pub fn online_of(&mut self, uids: &[Uid]) -> Result<Vec<Uid>, StoreError> {
        let script = Script::new(ONLINE_OF);
        let mut online = Vec::new();
        for chunk in uids.chunks(ONLINE_OF_CHUNK) {
            let mut call = script.key(CLIENT_INFO);
            call.arg(ALIVE_PREFIX);
            for uid in chunk {
                call.arg(uid.0);
            }
            let some: Vec<String> = self.redis.with(|c| call.invoke(c))?;
            online.extend(some.iter().filter_map(|u| crate::protocol::parse_uid(u)));
        }
        Ok(online)
    }

    /// Every group and its members.
    pub fn group_all(&mut self) -> Result<Vec<(String, Vec<Uid>)>, StoreError> {
        let groups: Vec<String> = self
            .redis
            .with(|c| redis::cmd("SMEMBERS").arg(GROUPS).query(c))?;
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let members: Vec<String> = self.redis.with(|c| {
                redis::cmd("SMEMBERS")
                    .arg(format!("{GROUP_PREFIX}{group}"))
                    .query(c)
            })?;
            let uids = members
                .iter()
                .filter_map(|m| crate::protocol::parse_uid(m))
                .collect();
            out.push((group, uids));
        }
        Ok(out)
    }

    /// This node has a member of each group online (true) or none any more (false).
    pub fn group_nodes(&mut self, changes: &[(&str, bool)]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let node = self.node.id();
        let node_groups = format!("{NODE_GROUPS_PREFIX}{node}");
        let mut pipe = redis::pipe();
        for (group, online) in changes {
            let cmd = if *online { "SADD" } else { "SREM" };
            pipe.cmd(cmd)
                .arg(format!("{GROUP_NODES_PREFIX}{group}"))
                .arg(&node)
                .ignore();
            pipe.cmd(cmd).arg(&node_groups).arg(*group).ignore();
        }
        self.redis.with(|c| pipe.query::<()>(c))
    }

    /// Publishes a group message to the other live nodes with a member online.
    pub fn group_route(&mut self, group: &str, payload: &[u8]) -> Result<u32, StoreError> {
        let script = Script::new(GROUP_ROUTE);
        let mut call = script.key(format!("{GROUP_NODES_PREFIX}{group}"));
        call.arg(payload)
            .arg(self.node.id())
            .arg(ALIVE_PREFIX)
            .arg(CHANNEL_PREFIX);
        self.redis.with(|c| call.invoke::<u32>(c))
    }

    /// Forgets which groups `node` had members online in (it died, or starts afresh).
    pub(super) fn purge_group_nodes(&mut self, node: &str) -> Result<(), StoreError> {
        let script = Script::new(PURGE_GROUP_NODES);
        let mut call = script.key(format!("{NODE_GROUPS_PREFIX}{node}"));
        call.arg(node).arg(GROUP_NODES_PREFIX);
        self.redis.with(|c| call.invoke::<()>(c))
    }
}
