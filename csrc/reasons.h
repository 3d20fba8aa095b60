// Shared vocabulary of the native core: missing reasons, default actions and
// dtype codes. The numbers are the contract of docs/ARCHITECTURE.md and must
// match featurecore/reasons.py; they are stored in matrices and rows.
#pragma once

#include <cstdint>

namespace fc {

// Why a cell does not hold its stored value; also the status of a decoded row
// (kPresent = decoded fine).
enum Reason : uint8_t {
    kPresent = 0,
    kNoHistory = 1,
    kNotApplicable = 2,
    kTimeout = 3,
    kNotComputed = 4,
    kPrivacyDisabled = 5,
    kEntityNotFound = 6,
    kStale = 7,
};
constexpr int kNumReasons = 8;

// What the assembler writes for a missing reason (priors are constants by now).
enum Action : uint8_t {
    kConstant = 0,
    kUseStaleIfAvailable = 1,
    kNullWithIndicator = 2,
    kFail = 3,
};
constexpr int kNumActions = 4;

// Stored dtype of a feature; every dtype is served as float32 slot(s).
enum DType : uint8_t {
    kFloat32 = 0,
    kFloat64 = 1,
    kInt64 = 2,
    kBool = 3,
    kCategorical = 4,  // int32 code into the feature's categories
    kEmbedding = 5,    // float32 x dim
};
constexpr int kNumDTypes = 6;

}  // namespace fc
