#include "plugin/dedupe/ordered_workers.h"

#include <atomic>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace snapdedupe {

void run_in_order(size_t count, unsigned threads, const std::function<void(size_t index, unsigned worker)>& task)
{
    std::atomic<size_t> next{0};
    std::mutex failure_mutex;
    std::exception_ptr failure;
    auto work = [&](unsigned worker) {
        for (size_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
            try {
                task(i, worker);
            } catch (...) {
                std::lock_guard<std::mutex> lock(failure_mutex);
                if (!failure)
                    failure = std::current_exception();
                next.store(count); // hand out nothing more
                return;
            }
        }
    };

    std::vector<std::thread> started;
    for (unsigned w = 1; w < threads && w < count; ++w) {
        try {
            started.emplace_back(work, w);
        } catch (const std::system_error&) {
            break; // no thread to be had: the ones running share the tasks
        }
    }
    work(0);
    for (std::thread& t : started)
        t.join();
    if (failure)
        std::rethrow_exception(failure);
}

} // namespace snapdedupe
