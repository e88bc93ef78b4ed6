// A small RAII layer over SQLite: one connection, prepared statements, transactions.
#pragma once

#include "snapshots/kernel/error.h"

#include <sqlite3.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace snapdedupe {

// Any SQLite failure. A damaged or foreign file makes the index unusable (exit code 5); any
// other failure is a failure of the run.
class SqliteError : public Error {
public:
    SqliteError(const std::string& what, int code)
        : Error(code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? ExitCode::kBadIndex : ExitCode::kFailure, what),
          code_(code)
    {
    }
    int code() const { return code_; }
    bool corrupt() const { return code_ == SQLITE_CORRUPT || code_ == SQLITE_NOTADB; }

private:
    int code_;
};

class Statement {
public:
    Statement(sqlite3* db, std::string_view sql);
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    Statement(Statement&& other) noexcept;
    ~Statement();

    Statement& bind(int index, int64_t value);
    Statement& bind(int index, uint64_t value) { return bind(index, static_cast<int64_t>(value)); }
    Statement& bind(int index, double value);
    Statement& bind(int index, std::string_view text);
    Statement& bind_blob(int index, const std::vector<uint8_t>& blob);
    // True while a row is available; false when done. The statement resets itself when done.
    bool step();
    // Runs to completion and resets, for statements that return no rows.
    void run();
    void reset();

    int64_t int64(int column) const;
    double real(int column) const;
    bool is_null(int column) const;
    std::string text(int column) const;
    std::vector<uint8_t> blob(int column) const;

private:
    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
};

class Database {
public:
    // Opens (creating if `create`) the database at `path`; ":memory:" works too.
    Database(const std::string& path, bool create);
    // Opens the file at `path` with SQLITE_OPEN_READONLY: never written, never created. Unless
    // `immutable`, SQLite reads through the -wal and -shm files next to it (and makes them when
    // missing, to read a WAL-mode file); `immutable` reads the file alone, without locks.
    struct ReadOnly {
        bool immutable = false;
    };
    Database(const std::string& path, ReadOnly mode);
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;
    ~Database();

    void exec(const std::string& sql);
    Statement prepare(std::string_view sql) { return Statement(db_, sql); }
    int64_t scalar(std::string_view sql);
    // Commits what the open transaction holds so far and opens the next one, so that it
    // survives a kill; outside a transaction every statement is durable already.
    void make_durable();
    const std::string& path() const { return path_; }

private:
    void open(const std::string& name, int flags);

    sqlite3* db_ = nullptr;
    std::string path_;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back when destroyed uncommitted (an exception, a kill).
class Transaction {
public:
    explicit Transaction(Database& db);
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();
    void commit();

private:
    Database& db_;
    bool done_ = false;
};

} // namespace snapdedupe
