#include "snapshots/snapshot_diff.h"

#include "snapshots/kernel/btrfs_send.h"
#include "snapshots/send_stream.h"

namespace snapdedupe {

ChangeSet diff_snapshot(const LabeledFd& snapshot, std::optional<uint64_t> parent_root, ChangeSetBuilder::View view)
{
    const std::string& name = snapshot.label();
    ChangeSet result;
    send_metadata_stream(snapshot, parent_root, [&](const LabeledFd& stream) {
        send::SendStreamParser parser(stream);
        ChangeSetBuilder builder(view);
        send::SendCommand command;
        while (parser.next(command)) {
            try {
                builder.apply(command);
            } catch (const ChangeSetError& e) {
                throw send::SendStreamError(name, e.problem(), command.stream_offset,
                                            std::string(send::command_name(command.cmd)));
            }
        }
        result = builder.finish();
    });
    return result;
}

} // namespace snapdedupe
