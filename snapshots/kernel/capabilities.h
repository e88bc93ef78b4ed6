// Which capabilities the process holds. Root is not enough to know: a unit's
// CapabilityBoundingSet, a container or `setpriv` can take some away, and a run that lacks
// one must stop before it changes anything, not find out half-way.
#pragma once

#include <string>
#include <vector>

namespace snapdedupe {

struct RequiredCapability {
    int capability;     // CAP_*
    const char* name;   // "CAP_SYS_ADMIN"
    const char* needed; // what for, in the message
};

// Throws Error(ExitCode::kNotRoot) naming the first capability missing from the effective set.
void require_capabilities(const std::vector<RequiredCapability>& required);

} // namespace snapdedupe
