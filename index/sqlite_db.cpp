#include "index/sqlite_db.h"

#include <utility>

namespace snapdedupe {

namespace {

[[noreturn]] void fail(sqlite3* db, int code, const std::string& what)
{
    std::string msg = what + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(code));
    throw SqliteError(msg, code);
}

// `path` as a file: URI (RFC 3986) that SQLite reads back byte for byte: every byte but
// unreserved ones and '/' as %XX ('?', '#', '%', bytes that are not UTF-8), and an absolute path
// after an empty authority, so that "//x" is not read as host x.
std::string file_uri(const std::string& path)
{
    constexpr char kHex[] = "0123456789ABCDEF";
    std::string out = path.starts_with('/') ? "file://" : "file:";
    for (unsigned char c : path) {
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (alnum || c == '/' || c == '-' || c == '.' || c == '_' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        }
    }
    return out;
}

} // namespace

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db)
{
    int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
    if (rc != SQLITE_OK)
        fail(db, rc, "preparing SQL");
}

Statement::Statement(Statement&& other) noexcept : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)) {}

Statement::~Statement()
{
    sqlite3_finalize(stmt_);
}

Statement& Statement::bind(int index, int64_t value)
{
    int rc = sqlite3_bind_int64(stmt_, index, value);
    if (rc != SQLITE_OK)
        fail(db_, rc, "binding");
    return *this;
}

Statement& Statement::bind(int index, double value)
{
    int rc = sqlite3_bind_double(stmt_, index, value);
    if (rc != SQLITE_OK)
        fail(db_, rc, "binding");
    return *this;
}

Statement& Statement::bind(int index, std::string_view text)
{
    int rc = sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    if (rc != SQLITE_OK)
        fail(db_, rc, "binding");
    return *this;
}

Statement& Statement::bind_blob(int index, const std::vector<uint8_t>& blob)
{
    // An empty vector's data() may be null, which SQLite binds as NULL, not as an empty blob.
    int rc = blob.empty() ? sqlite3_bind_zeroblob(stmt_, index, 0)
                          : sqlite3_bind_blob(stmt_, index, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    if (rc != SQLITE_OK)
        fail(db_, rc, "binding");
    return *this;
}

bool Statement::step()
{
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW)
        return true;
    sqlite3_reset(stmt_);
    if (rc != SQLITE_DONE)
        fail(db_, rc, "running SQL");
    return false;
}

void Statement::run()
{
    while (step()) {
    }
}

void Statement::reset()
{
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

int64_t Statement::int64(int column) const
{
    return sqlite3_column_int64(stmt_, column);
}

double Statement::real(int column) const
{
    return sqlite3_column_double(stmt_, column);
}

bool Statement::is_null(int column) const
{
    return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::string Statement::text(int column) const
{
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, column))) : std::string();
}

std::vector<uint8_t> Statement::blob(int column) const
{
    auto p = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_, column));
    return p ? std::vector<uint8_t>(p, p + sqlite3_column_bytes(stmt_, column)) : std::vector<uint8_t>();
}

Database::Database(const std::string& path, bool create) : path_(path)
{
    open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0));
}

Database::Database(const std::string& path, ReadOnly mode) : path_(path)
{
    // A URI, so that `immutable` can be said.
    open(file_uri(path) + (mode.immutable ? "?immutable=1" : ""),
         SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX);
}

void Database::open(const std::string& name, int flags)
{
    int rc = sqlite3_open_v2(name.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = "opening index " + path_ + ": " + (db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
        sqlite3_close(db_);
        db_ = nullptr;
        throw SqliteError(msg, rc);
    }
    sqlite3_extended_result_codes(db_, 0);
    sqlite3_busy_timeout(db_, 10000);
}

Database::~Database()
{
    sqlite3_close_v2(db_);
}

void Database::exec(const std::string& sql)
{
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string msg = "index " + path_ + ": " + (err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        throw SqliteError(msg, rc);
    }
}

int64_t Database::scalar(std::string_view sql)
{
    Statement st(db_, sql);
    int64_t value = st.step() ? st.int64(0) : 0;
    st.reset();
    return value;
}

void Database::make_durable()
{
    if (sqlite3_get_autocommit(db_))
        return;
    exec("COMMIT");
    exec("BEGIN IMMEDIATE");
}

Transaction::Transaction(Database& db) : db_(db)
{
    db_.exec("BEGIN IMMEDIATE");
}

Transaction::~Transaction()
{
    if (!done_) {
        try {
            db_.exec("ROLLBACK");
        } catch (...) {
            // Nothing to do: SQLite rolls back an open transaction when the connection closes.
        }
    }
}

void Transaction::commit()
{
    db_.exec("COMMIT");
    done_ = true;
}

} // namespace snapdedupe
