#include "plugin/dedupe/move_journal.h"

namespace snapdedupe {

void IndexJournal::record(const std::vector<DeferredMove>& moves)
{
    for (const DeferredMove& m : moves)
        index_.add_deferred(m);
    db_.make_durable();
}

} // namespace snapdedupe
