#include "index/index_summary.h"

#include "index/index_file.h"

#include <cerrno>

namespace snapdedupe {

std::vector<IndexedSnapshot> indexed_snapshots(Database& db)
{
    Statement st = db.prepare("SELECT uuid, lineage, otransid, path, processed_at FROM snapshots ORDER BY otransid");
    std::vector<IndexedSnapshot> out;
    while (st.step()) {
        IndexedSnapshot s;
        s.uuid = st.text(0);
        s.lineage = st.text(1);
        s.otransid = static_cast<uint64_t>(st.int64(2));
        s.path = st.text(3);
        s.processed_at = st.int64(4);
        out.push_back(std::move(s));
    }
    return out;
}

JournalSummary journal_summary(Database& db)
{
    // A journal from before the error column was added holds only moves not settled yet.
    const char* sql = index_has_column(db, "deferred", "error")
                          ? "SELECT error, count(*), coalesce(sum(length), 0) FROM deferred GROUP BY error"
                          : "SELECT 0, count(*), coalesce(sum(length), 0) FROM deferred";
    Statement st = db.prepare(sql);
    JournalSummary j;
    while (st.step()) {
        int error = static_cast<int>(st.int64(0));
        auto rows = static_cast<uint64_t>(st.int64(1));
        j.rows += rows;
        j.bytes += static_cast<uint64_t>(st.int64(2));
        if (error == 0)
            j.not_tried += rows;
        else if (error == EAGAIN)
            j.busy += rows;
        else
            j.errors[error] += rows;
    }
    return j;
}

} // namespace snapdedupe
