// Running numbered tasks on a few threads, handed out in order.
//
// The mover's dedupe calls for different keeper files are independent, and each one waits on
// the kernel: for its compare (CPU work under both files' inode locks) and for the pages the
// compare still has to read. One thread left the second core idle while it waited; two take
// the next keeper's calls meanwhile. Tasks are handed out in order, so the read-ahead thread,
// which reads in that order, stays just ahead of both.
#pragma once

#include <cstddef>
#include <functional>

namespace snapdedupe {

// Runs task(i, worker) once for each i in [0, count), handing the indices out in increasing
// order to `threads` workers: the calling thread (worker 0) and threads started here
// (workers 1 and up). A worker's tasks run one after another, so `worker` may pick per-thread
// state. A thread that cannot be started (a unit's TasksMax=) leaves its share to the others.
// The first exception a task throws stops the handing out; it is rethrown here once every
// worker has finished its current task.
void run_in_order(size_t count, unsigned threads, const std::function<void(size_t index, unsigned worker)>& task);

} // namespace snapdedupe
