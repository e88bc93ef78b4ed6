// Test seams: hooks that let the integration tests reach states the kernel and the journal
// must survive, set only through the command line's hidden --test-* options (never read from
// the environment, never on by default). Each returns an empty hook when unset.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace snapdedupe {

struct TestSeams {
    // Before each batch's dedupe calls, wait until a line can be read from this FIFO: a test
    // changes files, starts sends or deletes snapshots between fingerprinting and dedupe.
    std::string pause_fifo;
    // Right after the N-th dedupe call (FIDEDUPERANGE) of the run, die by SIGKILL: a test of
    // what a killed run leaves and how the next run finishes it.
    uint64_t kill_after_dedupe_calls = 0;
    // Dedupe without first reading each call's ranges into the page cache: a test that the
    // prefetch (FilesystemQueries::prefetch) never changes what is deduped.
    bool no_prefetch = false;

    std::function<void()> before_dedupe() const;
    std::function<void()> after_dedupe_call() const;
};

} // namespace snapdedupe
