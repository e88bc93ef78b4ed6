// Files for unit tests that need real ones: a private directory, removed with everything in it
// when the test ends, and a whole file's bytes.
#pragma once

#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace snapdedupe::testing {

class TempDir {
public:
    TempDir()
    {
        std::string pattern = (std::filesystem::temp_directory_path() / "snapdedupe-test-XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path_ = pattern;
    }
    ~TempDir() { std::filesystem::remove_all(path_); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string path(const std::string& name) const { return (path_ / name).string(); }
    // Writes `text` to a file in the directory; returns its path.
    std::string write(const std::string& name, const std::string& text) const
    {
        std::string file = path(name);
        std::ofstream(file) << text;
        return file;
    }

private:
    std::filesystem::path path_;
};

inline std::string file_bytes(const std::string& file)
{
    std::ifstream in(file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

} // namespace snapdedupe::testing
