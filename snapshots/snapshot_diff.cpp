#include "snapshots/snapshot_diff.h"

#include "snapshots/btrfs_send.h"
#include "snapshots/send_stream.h"

namespace snapdedupe {

ChangeSet diff_snapshot(int snapshot_fd, const std::string& name, std::optional<uint64_t> parent_root)
{
    ChangeSet result;
    send_metadata_stream(snapshot_fd, name.c_str(), parent_root, [&](int read_fd) {
        send::SendStreamParser parser(read_fd, name);
        ChangeSetBuilder builder;
        send::SendCommand command;
        while (parser.next(command))
            builder.apply(command);
        result = builder.finish();
    });
    return result;
}

} // namespace snapdedupe
