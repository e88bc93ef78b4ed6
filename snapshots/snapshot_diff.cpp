#include "snapshots/snapshot_diff.h"

#include "snapshots/kernel/btrfs_send.h"
#include "snapshots/send_stream.h"

namespace snapdedupe {

ChangeSet diff_snapshot(int snapshot_fd, const std::string& name, std::optional<uint64_t> parent_root)
{
    ChangeSet result;
    send_metadata_stream(snapshot_fd, name.c_str(), parent_root, [&](int read_fd) {
        send::SendStreamParser parser(read_fd, name);
        ChangeSetBuilder builder;
        send::SendCommand command;
        while (parser.next(command)) {
            try {
                builder.apply(command);
            } catch (const send::SendStreamError&) {
                throw;
            } catch (const std::runtime_error& e) {
                // A stream whose commands do not fit together is as broken as a bad CRC.
                throw send::SendStreamError(name, e.what(), command.stream_offset,
                                            std::string(send::command_name(command.cmd)));
            }
        }
        result = builder.finish();
    });
    return result;
}

} // namespace snapdedupe
