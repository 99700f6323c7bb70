// C++ symbol shapes for tests/unit/test_symbolize.py: namespaces, templates, classes,
// virtual functions, operators, an anonymous namespace, lambdas and extern "C".
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace geo {
template <typename T>
struct Vec {
    T x, y;
    T dot(const Vec &o) const;
};
template <typename T>
__attribute__((noinline)) T Vec<T>::dot(const Vec &o) const { return x * o.x + y * o.y; }
template struct Vec<int>;
template struct Vec<double>;

class Shape {
public:
    virtual ~Shape();
    virtual double area() const = 0;
};
Shape::~Shape() {}

class Circle : public Shape {
public:
    explicit Circle(double r) : r_(r) {}
    double area() const override;
private:
    double r_;
};
double Circle::area() const { return 3.14159 * r_ * r_; }

__attribute__((noinline)) Vec<int> operator+(const Vec<int> &a, const Vec<int> &b) {
    return {a.x + b.x, a.y + b.y};
}
}  // namespace geo

namespace {
__attribute__((noinline)) int anon_fn(std::map<std::string, std::vector<int>> &m) {
    m["k"].push_back(1);
    return static_cast<int>(m.size());
}
}  // namespace

extern "C" __attribute__((noinline)) int c_linkage(int x) { return x + 1; }

template <typename F>
__attribute__((noinline)) int apply(F f, int v) { return f(v); }

int main(int argc, char **) {
    std::map<std::string, std::vector<int>> m;
    geo::Vec<int> a{1, 2}, b{3, argc};
    geo::Vec<double> d{1.5, 2.5};
    geo::Circle c(argc);
    geo::Shape *s = &c;
    int r = apply([](int v) { return v * 2; }, argc) + anon_fn(m) + c_linkage(argc);
    r += (a + b).dot(a) + static_cast<int>(d.dot(d) + s->area());
    std::printf("%d\n", r);
    return 0;
}
