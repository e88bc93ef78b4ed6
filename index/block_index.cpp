#include "index/block_index.h"


namespace snapdedupe {

namespace {

// The columns every query that returns whole blocks selects, in the order block_row reads.
const char* const kBlockColumns =
    "id, extent, extent_offset, length, fingerprint, root_id, inode, inode_gen, file_offset, extent_gen, nodatasum";

IndexedBlock block_row(const Statement& st)
{
    auto u = [&](int col) { return static_cast<uint64_t>(st.int64(col)); };
    IndexedBlock b;
    b.id = st.int64(0);
    b.key = {u(1), u(2), u(9)};
    b.length = u(3);
    b.fingerprint = u(4);
    b.where = {{u(5), u(6), u(7)}, u(8)};
    b.nodatasum = st.int64(10) != 0;
    return b;
}

} // namespace

BlockIndex::BlockIndex(Database& db)
    : db_(db),
      knows_snapshot_(db.prepare("SELECT 1 FROM snapshots WHERE uuid = ?1")),
      knows_block_(db.prepare("SELECT id, extent_gen FROM blocks WHERE extent = ?1 AND extent_offset = ?2")),
      find_copies_(db.prepare(std::string("SELECT ") + kBlockColumns + " "
                              "FROM blocks WHERE fingerprint = ?1 AND length = ?2 AND nodatasum = ?6 "
                              "AND NOT (extent = ?3 AND extent_offset = ?4) ORDER BY id LIMIT ?5")),
      add_block_(db.prepare("INSERT OR REPLACE INTO blocks (extent, extent_offset, length, fingerprint, root_id, inode, "
                            "inode_gen, file_offset, extent_gen, nodatasum) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")),
      forget_block_(db.prepare("DELETE FROM blocks WHERE id = ?1"))
{
}

bool BlockIndex::knows_snapshot(const std::string& uuid)
{
    knows_snapshot_.reset();
    knows_snapshot_.bind(1, uuid);
    bool found = knows_snapshot_.step();
    knows_snapshot_.reset();
    return found;
}

bool BlockIndex::knows_block(const BlockKey& key)
{
    knows_block_.reset();
    knows_block_.bind(1, key.extent).bind(2, key.extent_offset);
    if (!knows_block_.step())
        return false;
    int64_t id = knows_block_.int64(0);
    bool same = static_cast<uint64_t>(knows_block_.int64(1)) == key.generation;
    knows_block_.reset();
    if (!same)
        forget_block(id); // the address was freed and reused since
    return same;
}

std::vector<IndexedBlock> BlockIndex::find_copies(const BlockContent& content, const BlockKey& key, int limit)
{
    find_copies_.reset();
    find_copies_.bind(1, content.fingerprint).bind(2, content.length).bind(3, key.extent).bind(4, key.extent_offset);
    find_copies_.bind(5, int64_t{limit}).bind(6, int64_t{content.nodatasum});
    std::vector<IndexedBlock> out;
    while (find_copies_.step())
        out.push_back(block_row(find_copies_));
    return out;
}

void BlockIndex::add_block(const BlockKey& key, const BlockContent& content, const BlockLocation& where)
{
    add_block_.reset();
    add_block_.bind(1, key.extent).bind(2, key.extent_offset).bind(3, content.length).bind(4, content.fingerprint);
    add_block_.bind(10, int64_t{content.nodatasum});
    add_block_.bind(5, where.file.root).bind(6, where.file.inode).bind(7, where.file.generation);
    add_block_.bind(8, where.file_offset);
    add_block_.bind(9, key.generation);
    add_block_.run();
}

void BlockIndex::forget_block(int64_t id)
{
    forget_block_.reset();
    forget_block_.bind(1, id);
    forget_block_.run();
}

void BlockIndex::add_snapshot(const ProcessedSnapshot& s)
{
    Statement st = db_.prepare("INSERT OR REPLACE INTO snapshots (uuid, root_id, lineage, otransid, path, processed_at, "
                               "changed_bytes, changed_paths) VALUES (?1, ?2, ?3, ?4, ?5, strftime('%s','now'), ?6, ?7)");
    st.bind(1, s.uuid).bind(2, s.root_id).bind(3, s.lineage).bind(4, s.otransid).bind(5, s.path);
    st.bind(6, s.changed_bytes).bind_blob(7, {}); // changed_paths: no longer kept (see index_file.cpp)
    st.run();
}

void BlockIndex::add_deferred(const DeferredMove& m)
{
    Statement st = db_.prepare("INSERT OR REPLACE INTO deferred (root_id, inode, inode_gen, file_offset, length, "
                               "keeper_root, keeper_inode, keeper_gen, keeper_offset, keeper_extent, "
                               "keeper_extent_offset, error, primary_ref) "
                               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
    st.bind(1, m.where.file.root).bind(2, m.where.file.inode).bind(3, m.where.file.generation);
    st.bind(4, m.where.file_offset).bind(5, m.length);
    st.bind(6, m.keeper.file.root).bind(7, m.keeper.file.inode).bind(8, m.keeper.file.generation);
    st.bind(9, m.keeper.file_offset).bind(10, m.keeper_key.extent).bind(11, m.keeper_key.extent_offset);
    st.bind(12, int64_t{m.error}).bind(13, int64_t{m.primary ? 1 : 0});
    st.run();
}

void BlockIndex::settle_deferred(const BlockLocation& where)
{
    Statement st = db_.prepare("DELETE FROM deferred WHERE root_id = ?1 AND inode = ?2 AND file_offset = ?3");
    st.bind(1, where.file.root).bind(2, where.file.inode).bind(3, where.file_offset);
    st.run();
}

std::vector<DeferredMove> BlockIndex::deferred()
{
    Statement st = db_.prepare("SELECT root_id, inode, inode_gen, file_offset, length, keeper_root, keeper_inode, "
                               "keeper_gen, keeper_offset, keeper_extent, keeper_extent_offset, error, primary_ref FROM deferred "
                               "ORDER BY root_id, inode, file_offset");
    std::vector<DeferredMove> out;
    auto u = [&](int col) { return static_cast<uint64_t>(st.int64(col)); };
    while (st.step()) {
        DeferredMove m;
        m.where = {{u(0), u(1), u(2)}, u(3)};
        m.length = u(4);
        m.keeper = {{u(5), u(6), u(7)}, u(8)};
        m.keeper_key = {u(9), u(10)};
        m.error = static_cast<int>(st.int64(11));
        m.primary = st.int64(12) != 0;
        out.push_back(m);
    }
    return out;
}

std::optional<IndexedBlock> BlockIndex::block_at(const BlockKey& key)
{
    Statement st = db_.prepare(std::string("SELECT ") + kBlockColumns +
                               " FROM blocks WHERE extent = ?1 AND extent_offset = ?2");
    st.bind(1, key.extent).bind(2, key.extent_offset);
    std::optional<IndexedBlock> found;
    if (st.step())
        found = block_row(st);
    st.reset();
    return found;
}

std::vector<ProcessedSnapshot> BlockIndex::snapshots()
{
    Statement st = db_.prepare("SELECT uuid, root_id, lineage, otransid, path, changed_bytes FROM snapshots "
                               "ORDER BY otransid");
    std::vector<ProcessedSnapshot> out;
    while (st.step()) {
        ProcessedSnapshot s;
        s.uuid = st.text(0);
        s.root_id = static_cast<uint64_t>(st.int64(1));
        s.lineage = st.text(2);
        s.otransid = static_cast<uint64_t>(st.int64(3));
        s.path = st.text(4);
        s.changed_bytes = static_cast<uint64_t>(st.int64(5));
        out.push_back(std::move(s));
    }
    return out;
}

std::vector<IndexedBlock> BlockIndex::blocks_in_root(uint64_t root)
{
    Statement st = db_.prepare(std::string("SELECT ") + kBlockColumns +
                               " FROM blocks WHERE root_id = ?1 ORDER BY inode, inode_gen, file_offset");
    st.bind(1, root);
    std::vector<IndexedBlock> out;
    while (st.step())
        out.push_back(block_row(st));
    return out;
}

void BlockIndex::move_block(int64_t id, const BlockLocation& where)
{
    Statement st = db_.prepare("UPDATE blocks SET root_id = ?2, inode = ?3, inode_gen = ?4, file_offset = ?5 "
                               "WHERE id = ?1");
    st.bind(1, id).bind(2, where.file.root).bind(3, where.file.inode).bind(4, where.file.generation);
    st.bind(5, where.file_offset);
    st.run();
}

void BlockIndex::exchange_block(int64_t id, const BlockKey& key, const BlockLocation& where)
{
    // OR REPLACE: a row of the copy's own (an earlier location of those bytes) gives way to it.
    Statement st = db_.prepare("UPDATE OR REPLACE blocks SET extent = ?2, extent_offset = ?3, extent_gen = ?4, "
                               "root_id = ?5, inode = ?6, inode_gen = ?7, file_offset = ?8 WHERE id = ?1");
    st.bind(1, id).bind(2, key.extent).bind(3, key.extent_offset).bind(4, key.generation);
    st.bind(5, where.file.root).bind(6, where.file.inode).bind(7, where.file.generation).bind(8, where.file_offset);
    st.run();
}

int64_t BlockIndex::last_block_id()
{
    return db_.scalar("SELECT coalesce(max(id), 0) FROM blocks");
}

int64_t BlockIndex::forget_snapshot(uint64_t root)
{
    Statement blocks = db_.prepare("DELETE FROM blocks WHERE root_id = ?1");
    blocks.bind(1, root);
    blocks.run();
    int64_t forgotten = db_.scalar("SELECT changes()");
    Statement deferred = db_.prepare("DELETE FROM deferred WHERE root_id = ?1");
    deferred.bind(1, root);
    deferred.run();
    Statement snapshot = db_.prepare("DELETE FROM snapshots WHERE root_id = ?1");
    snapshot.bind(1, root);
    snapshot.run();
    return forgotten;
}

} // namespace snapdedupe
