// run_in_order: every task runs once, handed out in order, on the threads asked for; the first
// failure stops the handing out and reaches the caller.
#include "plugin/dedupe/ordered_workers.h"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace snapdedupe;

TEST_CASE("ordered workers: each task once, started in order, worker numbers below the thread count")
{
    std::mutex mutex;
    std::vector<size_t> started;
    std::set<unsigned> workers;
    run_in_order(200, 2, [&](size_t i, unsigned worker) {
        std::lock_guard<std::mutex> lock(mutex);
        started.push_back(i);
        workers.insert(worker);
    });
    REQUIRE(started.size() == 200);
    // Handed out in order; two workers may record their starts in either order.
    for (size_t k = 0; k < started.size(); ++k)
        CHECK(started[k] <= k + 1);
    CHECK(std::set<size_t>(started.begin(), started.end()).size() == 200);
    for (unsigned w : workers)
        CHECK(w < 2);
}

TEST_CASE("ordered workers: two threads run two tasks at once")
{
    // The first task waits for the second to start: with one thread it would wait in vain.
    std::mutex mutex;
    std::condition_variable changed;
    bool second_started = false;
    bool met = false;
    run_in_order(2, 2, [&](size_t i, unsigned) {
        std::unique_lock<std::mutex> lock(mutex);
        if (i == 1) {
            second_started = true;
            changed.notify_all();
            return;
        }
        met = changed.wait_for(lock, std::chrono::seconds(10), [&] { return second_started; });
    });
    CHECK(met);
}

TEST_CASE("ordered workers: one thread runs everything on the caller's thread, in order")
{
    std::vector<size_t> started;
    const std::thread::id caller = std::this_thread::get_id();
    run_in_order(5, 1, [&](size_t i, unsigned worker) {
        CHECK(worker == 0);
        CHECK(std::this_thread::get_id() == caller);
        started.push_back(i);
    });
    CHECK(started == std::vector<size_t>{0, 1, 2, 3, 4});
    run_in_order(0, 2, [&](size_t, unsigned) { FAIL("no task to run"); });
}

TEST_CASE("ordered workers: the first failure stops the handing out and is rethrown")
{
    std::mutex mutex;
    std::vector<size_t> started;
    auto task = [&](size_t i, unsigned) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            started.push_back(i);
        }
        if (i == 3)
            throw std::runtime_error("task 3 failed");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    CHECK_THROWS_WITH(run_in_order(1000, 2, task), "task 3 failed");
    // The other worker finishes the task in hand and takes no more; the tasks it ran before the
    // failure was seen are a few at 1 ms each, not the 996 left.
    CHECK(started.size() < 100);
}
