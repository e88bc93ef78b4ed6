// The diff's view of a change set (ChangeSet::truncated, metadata, inode_numbers): what the
// replay records in an inode's DiffInfo, and how finish lists it. Only a View::kDiff builder
// makes DiffInfo (NameTree::diff), so the note_ functions take a DiffInfo* that is null in a
// View::kRun builder, or for an inode no command gave one yet, and then do nothing.
// Private to ChangeSetBuilder's files (snapshots/change_set_model.h lists them).
#pragma once

#include "snapshots/change_set_model.h"

#include <cstdint>
#include <optional>

namespace snapdedupe::change_set_model {

// The stream created the inode: it has the creating command's INO, and a regular file
// starts empty.
void note_created(DiffInfo* info, std::optional<uint64_t> ino, Kind kind);
// A data command reached offset + length: a known size grows to it (never shrinks).
void grow(DiffInfo* info, uint64_t offset, uint64_t length);
// TRUNCATE set the size.
void note_truncated(DiffInfo* info, uint64_t size);
// A metadata command (CHMOD, CHOWN, UTIMES, SET_XATTR, ...).
void note_metadata(DiffInfo* info, send::Command command);

// For finish. The root's metadata changes, listed as ".".
void list_root_diff(ChangeSet& out, const Inode& root);
// An inode's entries in truncated, metadata and inode_numbers, under the name `files` uses.
void list_diff(ChangeSet& out, const NameTree& tree, const Inode& inode);

} // namespace snapdedupe::change_set_model
