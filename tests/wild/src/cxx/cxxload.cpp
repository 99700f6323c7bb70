// A C++ workload for the wild panel: virtual calls, std::sort with a lambda,
// std::map, exceptions, std::function callbacks and a second thread.
//     cxxload [SECONDS]      (runs forever without an argument)
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

namespace {

struct Shape {
    virtual ~Shape() = default;
    virtual double area(int rounds) const = 0;
};

struct Square : Shape {
    double side;
    explicit Square(double s) : side(s) {}
    double area(int rounds) const override {
        double a = 0;
        for (int i = 0; i < rounds; ++i) a += side * side / (i + 1);
        return a;
    }
};

struct Circle : Shape {
    double r;
    explicit Circle(double radius) : r(radius) {}
    double area(int rounds) const override {
        double a = 0;
        for (int i = 0; i < rounds; ++i) a += 3.14159 * r * r / (i + 2);
        return a;
    }
};

__attribute__((noinline)) double virtual_round(const std::vector<std::unique_ptr<Shape>>& shapes) {
    double total = 0;
    for (const auto& s : shapes) total += s->area(200);
    return total;
}

__attribute__((noinline)) long sort_round(std::vector<long>& v, unsigned seed) {
    for (auto& x : v) { seed = seed * 1103515245u + 12345u; x = seed % 100003; }
    std::sort(v.begin(), v.end(), [](long a, long b) { return (a % 1009) < (b % 1009) || ((a % 1009) == (b % 1009) && a < b); });
    return v[v.size() / 2];
}

__attribute__((noinline)) size_t map_round(int n) {
    std::map<std::string, int> m;
    for (int i = 0; i < n; ++i) m["key" + std::to_string((i * 7919) % n)] += i;
    size_t s = 0;
    for (const auto& kv : m) s += kv.first.size() + static_cast<size_t>(kv.second);
    return s;
}

__attribute__((noinline)) int thrower(int depth) {
    if (depth == 0) throw std::runtime_error("bottom");
    return thrower(depth - 1) + 1;
}

__attribute__((noinline)) int exception_round() {
    int caught = 0;
    for (int d = 0; d < 20; ++d) {
        try { thrower(d); } catch (const std::exception&) { ++caught; }
    }
    return caught;
}

__attribute__((noinline)) long callback_round(const std::function<long(long)>& f, int n) {
    long acc = 0;
    for (int i = 0; i < n; ++i) acc += f(i);
    return acc;
}

std::atomic<bool> stop_flag{false};
volatile double sink;

void worker() {
    std::vector<long> v(5000);
    unsigned seed = 7;
    while (!stop_flag.load()) sink = static_cast<double>(sort_round(v, seed++)) + static_cast<double>(map_round(500));
}

}  // namespace

int main(int argc, char** argv) {
    double seconds = argc > 1 ? std::atof(argv[1]) : 1e18;
    std::vector<std::unique_ptr<Shape>> shapes;
    for (int i = 0; i < 64; ++i) {
        if (i % 2) shapes.push_back(std::make_unique<Square>(i));
        else shapes.push_back(std::make_unique<Circle>(i));
    }
    std::thread t(worker);
    std::vector<long> v(20000);
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    unsigned seed = 1;
    long mult = 3;
    while (std::chrono::steady_clock::now() < end) {
        sink = virtual_round(shapes);
        sink = static_cast<double>(sort_round(v, seed++));
        sink = static_cast<double>(map_round(2000));
        sink = exception_round();
        sink = static_cast<double>(callback_round([mult](long x) { return x * mult + (x >> 3); }, 100000));
    }
    stop_flag = true;
    t.join();
    return 0;
}
