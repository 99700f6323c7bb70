// Forced include (g++ -include) for the arm64 ground-truth build of cxx/cxxload.cpp.
// qemu-user's gdbstub cannot stop and step one thread of several reliably, so the
// aarch64 capture runs cxxload single-threaded: `std::thread t(worker)` becomes an
// object that never starts the worker, and `t.join()` returns at once.  Everything
// the main thread does (virtual calls, std::sort with a lambda, std::map,
// exceptions, std::function) is unchanged.  cxxload.cpp's own headers are included
// first so that the macro below touches only cxxload.cpp's text.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace std {
struct sfp_no_thread {
    template <class F>
    explicit sfp_no_thread(F&&) {}
    void join() {}
};
}  // namespace std

#define thread sfp_no_thread
