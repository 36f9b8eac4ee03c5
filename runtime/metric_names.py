"""Runtime metric names and labels: a contract (docs/formats.md) shared with the operator.

The operator imports this module to build its PromQL, so it must stay import-light: constants
only, no prometheus_client, numpy or onnxruntime.
"""

from __future__ import annotations

# prometheus_client appends `_total` to counters itself; these are the exposed names.
REQUESTS_TOTAL = "serin_requests_total"
REQUEST_DURATION_SECONDS = "serin_request_duration_seconds"
INFERENCE_ROWS_TOTAL = "serin_inference_rows_total"
# onnxruntime calls: a batch of requests run together counts once, so rows / runs is the mean
# batch size (Triton's execution count beside its inference count).
MODEL_RUNS_TOTAL = "serin_model_runs_total"
PREDICTIONS_TOTAL = "serin_predictions_total"
PREDICTION_VALUE = "serin_prediction_value"
FEATURE_PSI = "serin_feature_psi"
INPUT_PSI = "serin_input_psi"
DRIFT_WINDOW_ROWS = "serin_drift_window_rows"
# Drift as a test: Holm-adjusted p-values (KS for numeric features, chi-squared for categorical
# ones) of the window against the reference sample, and their minimum.
FEATURE_DRIFT_PVALUE = "serin_feature_drift_pvalue"
INPUT_DRIFT_PVALUE = "serin_input_drift_pvalue"

# Monitoring over time (the operator's monitoring.py): rows per bin of each profiled feature, a
# counter (its differences between two instants are exact counts, which the sequential tests
# need; PSI gauges over a sliding window are not), and the reference profile's share of each bin,
# of each predicted class, and its accuracy, as gauges: the operator reads the reference from the
# runtime that serves it, so it never needs the model store. Series per Pod: 2 x (bins of all
# profiled features) + classes + 1; 30 features of 10 bins and 2 classes make 603.
FEATURE_BIN_ROWS_TOTAL = "serin_feature_bin_rows_total"
FEATURE_BIN_REFERENCE_RATIO = "serin_feature_bin_reference_ratio"
PREDICTION_REFERENCE_RATIO = "serin_prediction_reference_ratio"
REFERENCE_ACCURACY = "serin_reference_accuracy"
# Regressors: the reference profile's share of predicted values in each bucket of the
# serin_prediction_value histogram, labelled with the bucket's upper bound `le` exactly as the
# histogram labels it (bins between the profile's cuts): prediction shift over time for values.
PREDICTION_VALUE_REFERENCE_RATIO = "serin_prediction_value_reference_ratio"
LE = "le"
# When this runtime started (unix seconds), one series per Pod: the operator counts a series that
# has no sample at a window's start from zero only if its Pod started inside the window; a Pod older
# than that whose sample is missing (a scrape gap, data past retention) is left out, never counted
# from its birth.
START_TIME_SECONDS = "serin_start_time_seconds"

# Ground truth sent to the feedback endpoint (feedback.py), counted under the revision that made
# the prediction (label `predicted_revision`; `revision` stays the answering replica's, as on every
# series, since scrape configs often attach their own `revision` target label, which would
# overwrite a `revision` that differs from the Pod's). Accuracy = correct / rows, log loss and
# Brier score = their sums / scored rows (rows whose class probabilities were known), MAE =
# absolute error / rows, RMSE = sqrt(squared error / rows). Sums are counters, so any window's
# figure is a ratio of increase()s.
FEEDBACK_ROWS_TOTAL = "serin_feedback_rows_total"
FEEDBACK_CORRECT_TOTAL = "serin_feedback_correct_total"
FEEDBACK_SCORED_ROWS_TOTAL = "serin_feedback_scored_rows_total"
FEEDBACK_LOG_LOSS_TOTAL = "serin_feedback_log_loss_total"
FEEDBACK_BRIER_TOTAL = "serin_feedback_brier_total"
FEEDBACK_ABSOLUTE_ERROR_TOTAL = "serin_feedback_absolute_error_total"
FEEDBACK_SQUARED_ERROR_TOTAL = "serin_feedback_squared_error_total"
# The label-free accuracy estimate (confidence-based, NannyML's CBPE): the sum over answered rows
# of the calibrated probability of the predicted class, and those rows; their ratio over a window
# is the accuracy the model should have there if its reference calibration holds.
ESTIMATED_CORRECT_TOTAL = "serin_estimated_correct_total"
ESTIMATED_ROWS_TOTAL = "serin_estimated_rows_total"
# Feedback requests by answer code (200, 400 bad shape, 404 unknown or forged id, 409 duplicate,
# 410 too old), under the revision of the replica that answered.
FEEDBACK_REQUESTS_TOTAL = "serin_feedback_requests_total"
FEEDBACK_CODES: tuple[str, ...] = ("200", "400", "404", "409", "410")
# Feedback taken, by where (feedback.py, Forwarder): `here` (an id this replica issued, or one that
# names no issuer), `forwarded` (sent on to the replica that issued it: that one counts it),
# `received` (forwarded here by another replica), `issuer_gone` (its issuer is gone or its address
# is no longer this Model's: taken here; the same truth sent to several replicas then counts once
# on each, docs/security.md).
FEEDBACK_ROUTED_TOTAL = "serin_feedback_routed_total"
FEEDBACK_ROUTES: tuple[str, ...] = ("here", "forwarded", "received", "issuer_gone")

# Payload capture (capture.py): rows written to the capture store by kind (predictions, truth), and
# rows dropped by reason (queue_full: the store is slower than the traffic or down; write_failed:
# the store refused a batch; unserialisable; too_large: one request beyond the bounds; shutdown:
# unwritten when a graceful stop's time was up). Capture never fails an answer or waits on the
# store: these say what it lost instead.
CAPTURE_ROWS_TOTAL = "serin_capture_rows_total"
CAPTURE_DROPPED_ROWS_TOTAL = "serin_capture_dropped_rows_total"
CAPTURE_KINDS: tuple[str, ...] = ("predictions", "truth")
CAPTURE_DROP_REASONS: tuple[str, ...] = ("queue_full", "write_failed", "unserialisable", "too_large", "shutdown")

# Every HTTP status the inference path answers. The runtime exports a zero-valued
# serin_requests_total series for each (protocol, code) at start-up: `rate()` ignores the value a
# series is born with, so a first burst of 5xx in a lazily created series would be invisible.
ANSWERED_CODES: tuple[str, ...] = ("200", "400", "404", "413", "500")
PROTOCOLS: tuple[str, ...] = ("v1", "v2", "grpc")  # grpc: V2 over gRPC

# Label names.
MODEL = "model"
REVISION = "revision"
PROTOCOL = "protocol"  # "v1" | "v2" | "grpc"
CODE = "code"  # HTTP status code as a string, e.g. "200", "400"
CLASS = "class"
FEATURE = "feature"
BIN = "bin"  # a feature's bin index in its profile, "0" upwards
PREDICTED_REVISION = "predicted_revision"  # feedback: the revision that made the prediction
KIND = "kind"  # capture: predictions | truth
REASON = "reason"  # capture: why rows were dropped
ROUTE = "route"  # feedback: where truth was taken (FEEDBACK_ROUTES)

# Labels per metric, in exposition order.
LABELS: dict[str, tuple[str, ...]] = {
    REQUESTS_TOTAL: (MODEL, REVISION, PROTOCOL, CODE),
    REQUEST_DURATION_SECONDS: (MODEL, REVISION, PROTOCOL),
    INFERENCE_ROWS_TOTAL: (MODEL, REVISION),
    MODEL_RUNS_TOTAL: (MODEL, REVISION),
    PREDICTIONS_TOTAL: (MODEL, REVISION, CLASS),
    PREDICTION_VALUE: (MODEL, REVISION),
    FEATURE_PSI: (MODEL, REVISION, FEATURE),
    INPUT_PSI: (MODEL, REVISION),
    DRIFT_WINDOW_ROWS: (MODEL, REVISION),
    FEATURE_DRIFT_PVALUE: (MODEL, REVISION, FEATURE),
    INPUT_DRIFT_PVALUE: (MODEL, REVISION),
    FEATURE_BIN_ROWS_TOTAL: (MODEL, REVISION, FEATURE, BIN),
    FEATURE_BIN_REFERENCE_RATIO: (MODEL, REVISION, FEATURE, BIN),
    PREDICTION_REFERENCE_RATIO: (MODEL, REVISION, CLASS),
    PREDICTION_VALUE_REFERENCE_RATIO: (MODEL, REVISION, LE),
    START_TIME_SECONDS: (MODEL, REVISION),
    REFERENCE_ACCURACY: (MODEL, REVISION),
    **{name: (MODEL, REVISION, PREDICTED_REVISION) for name in (
        FEEDBACK_ROWS_TOTAL, FEEDBACK_CORRECT_TOTAL, FEEDBACK_SCORED_ROWS_TOTAL, FEEDBACK_LOG_LOSS_TOTAL,
        FEEDBACK_BRIER_TOTAL, FEEDBACK_ABSOLUTE_ERROR_TOTAL, FEEDBACK_SQUARED_ERROR_TOTAL)},
    ESTIMATED_CORRECT_TOTAL: (MODEL, REVISION),
    ESTIMATED_ROWS_TOTAL: (MODEL, REVISION),
    FEEDBACK_REQUESTS_TOTAL: (MODEL, REVISION, CODE),
    FEEDBACK_ROUTED_TOTAL: (MODEL, REVISION, ROUTE),
    CAPTURE_ROWS_TOTAL: (MODEL, REVISION, KIND),
    CAPTURE_DROPPED_ROWS_TOTAL: (MODEL, REVISION, REASON),
}

# Request latency buckets (seconds): fine below 50 ms, where canary p99 limits usually sit.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)

# Conventional PSI bands: < 0.1 no shift, 0.1-0.2 moderate, > 0.2 significant.
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.2
