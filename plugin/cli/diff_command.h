// `snapdedupe diff OLD NEW`: what changed between two read-only snapshots, from the send stream.
#pragma once

#include <iosfwd>
#include <string>

namespace snapdedupe {

// OLD and NEW must be read-only subvolumes of one filesystem (PathError otherwise).
void diff_command(const std::string& old_path, const std::string& new_path, bool json, std::ostream& out);

} // namespace snapdedupe
