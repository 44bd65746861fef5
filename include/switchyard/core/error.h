// Typed errors and check macros for Switchyard.
// User mistakes and bad files raise a typed sy::Error subclass whose message starts with the component in
// brackets, e.g. "[safetensors] header length 9000 runs past the end of file.bin (512 bytes)". Internal
// invariants use SY_CHECK, which throws sy::InternalError. Library code never calls exit() or abort().
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sy {

// Base of every error the library throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class InvalidArgument : public Error { public: using Error::Error; };  // a flag, id or shape the caller got wrong
class FormatError : public Error { public: using Error::Error; };      // a file whose contents are malformed
class IoError : public Error { public: using Error::Error; };          // a file that cannot be opened, read or written
class Unsupported : public Error { public: using Error::Error; };      // valid input that this build cannot handle
class OutOfMemory : public Error { public: using Error::Error; };      // an allocation that failed
class InternalError : public Error { public: using Error::Error; };    // a broken invariant: a bug in Switchyard

namespace detail {
// Concatenates any streamable arguments into one string.
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Builds an error of type E from "[component] " + the streamed arguments.
template <typename E, typename... Args>
E make_error(const char* component, const Args&... args) {
  return E(detail::concat("[", component, "] ", args...));
}

}  // namespace sy

// Throws sy::InternalError naming the failed condition and its location.
#define SY_CHECK(cond, ...)                                                                        \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      throw ::sy::InternalError(::sy::detail::concat("[internal] check failed: ", #cond, " at ",  \
                                                     __FILE__, ":", __LINE__, " " __VA_OPT__(, ) \
                                                         __VA_ARGS__));                            \
    }                                                                                              \
  } while (0)

// Throws error type E with "[component] message" when cond is false.
#define SY_REQUIRE(cond, E, component, ...)                                    \
  do {                                                                         \
    if (!(cond)) throw ::sy::make_error<E>(component __VA_OPT__(, ) __VA_ARGS__); \
  } while (0)
