// ChangeSetBuilder's model of the name tree (snapshots/change_set_model.h): the inode a path
// names, entries of the parent snapshot materialized as the stream mentions them, names
// linked and unlinked, and paths rebuilt from names.
#include "snapshots/change_set_model.h"

#include <algorithm>

namespace snapdedupe::change_set_model {

NameTree::NameTree(bool diff_view) : root(&inodes.emplace_back()), diff_view(diff_view)
{
    root->existed = true;
    root->kind = Kind::Directory;
}

// Walks up first names to the root. A loop, not recursion, and bounded: a corrupt
// stream can rename a directory into its own subtree (the kernel never does), and
// the name tree then has a cycle that would otherwise recurse until the stack ends.
std::string NameTree::path_up(const Link& link, std::vector<Link> Inode::*names) const
{
    std::vector<const std::string*> parts{&link.name};
    for (const Inode* dir = link.dir; dir != root && !(dir->*names).empty();
         dir = (dir->*names).front().dir) {
        if (parts.size() > inodes.size())
            throw ChangeSetError("makes a directory its own ancestor (at '" +
                                     link.name + "')");
        parts.push_back(&(dir->*names).front().name);
    }
    std::string path;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (!path.empty())
            path += '/';
        path += **it;
    }
    return path;
}

std::string NameTree::path_of(const Link& link) const { return path_up(link, &Inode::links); }

std::string NameTree::original_path_of(const Link& link) const
{
    return path_up(link, &Inode::original_links);
}

std::vector<std::string> NameTree::paths_of(const Inode& inode) const
{
    std::vector<std::string> paths;
    for (const Link& l : inode.links)
        paths.push_back(path_of(l));
    return paths;
}

Inode& NameTree::child(Inode& dir, const std::string& name, const std::string& full_path)
{
    if (auto it = dir.children.find(name); it != dir.children.end())
        return *it->second;
    // Not seen yet: in an incremental stream it is an unchanged entry of the parent
    // snapshot, provided its directory came from the parent and never lost the name.
    if (!has_parent || !dir.existed || dir.touched.count(name) || dir.kind == Kind::Regular ||
        dir.kind == Kind::Other)
        throw ChangeSetError("refers to missing path '" + full_path + "'");
    dir.kind = Kind::Directory;
    Inode& found = inodes.emplace_back();
    found.existed = true;
    found.links.push_back({&dir, name});
    found.original_links.push_back({&dir, name});
    dir.children.emplace(name, &found);
    return found;
}

std::pair<Inode*, std::string> NameTree::parent_of(const std::string& path)
{
    Inode* dir = root;
    std::string component;
    std::size_t pos = 0;
    for (;;) {
        std::size_t slash = path.find('/', pos);
        std::string part = path.substr(pos, slash == std::string::npos ? slash : slash - pos);
        if (!part.empty()) {
            if (!component.empty())
                dir = &child(*dir, component, path);
            component = std::move(part);
        }
        if (slash == std::string::npos)
            break;
        pos = slash + 1;
    }
    if (component.empty())
        throw ChangeSetError("names the subvolume root where an entry is needed");
    return {dir, component};
}

Inode& NameTree::resolve(const std::string& path)
{
    if (path.find_first_not_of('/') == std::string::npos)
        return *root;
    auto [dir, name] = parent_of(path);
    return child(*dir, name, path);
}

void NameTree::unlink(Inode& dir, const std::string& name)
{
    auto it = dir.children.find(name);
    if (it == dir.children.end())
        return;
    auto& links = it->second->links;
    links.erase(std::remove(links.begin(), links.end(), Link{&dir, name}), links.end());
    dir.children.erase(it);
    dir.touched.insert(name);
}

void NameTree::link(Inode& inode, Inode& dir, const std::string& name)
{
    unlink(dir, name); // rename(2) semantics: the target name is replaced
    dir.kind = Kind::Directory;
    dir.children[name] = &inode;
    dir.touched.insert(name);
    inode.links.push_back({&dir, name});
}

} // namespace snapdedupe::change_set_model
