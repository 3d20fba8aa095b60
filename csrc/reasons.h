// Shared vocabulary of the native core: missing reasons, default actions and
// dtype codes, with their names. This header is their one definition: the
// numbers are stored in matrices and rows (docs/ARCHITECTURE.md), _core exposes
// them as REASONS, ACTIONS and DTYPES (csrc/bind_vocabulary.cpp), and Python
// reads them from there (tests/test_vocabulary.py pins featurecore/reasons.py's
// enums to them).
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
constexpr const char* kReasonNames[kNumReasons] = {
    "present", "no_history", "not_applicable", "timeout",
    "not_computed", "privacy_disabled", "entity_not_found", "stale",
};

// What the assembler writes for a missing reason (priors are constants by now).
enum Action : uint8_t {
    kConstant = 0,
    kUseStaleIfAvailable = 1,
    kNullWithIndicator = 2,
    kFail = 3,
};
constexpr int kNumActions = 4;
constexpr const char* kActionNames[kNumActions] = {
    "constant", "use_stale_if_available", "null_with_indicator", "fail",
};

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
constexpr const char* kDTypeNames[kNumDTypes] = {
    "float32", "float64", "int64", "bool", "categorical", "embedding",
};

}  // namespace fc
