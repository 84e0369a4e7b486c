// A caching CPU allocator that attributions install while they run (see featvis_fast/_cpu_cache.py).
#pragma once

#include <cstdint>
#include <tuple>

namespace featvis::cpu {

// Install the caching allocator as torch's CPU allocator (nested calls count depth); returns
// false when another allocator with a higher priority is installed (nothing changes then).
bool cache_begin();
// Leave one level; at depth 0 restore the previous allocator and free the cached blocks that
// this call did not reuse (the cache keeps one call's working set).
void cache_end();
// Free every cached block.
void cache_empty();
// (cached bytes, hits, misses) since the process started.
std::tuple<int64_t, int64_t, int64_t> cache_stats();

}  // namespace featvis::cpu
