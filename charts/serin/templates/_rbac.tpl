{{/*
The operator's rules on namespaced resources: one list, used by the ClusterRole in cluster-wide
mode and by the per-namespace Role in namespaced mode. Each rule says why it is needed; nothing
here may be added without a reason and a `kubectl auth can-i` case in tests/packaging.
*/}}
{{- define "serin.namespacedRules" -}}
# Models: kopf lists and watches them to reconcile, and patches their metadata (its
# last-handled-configuration annotation and progress annotations). No create, update or delete:
# the operator never replaces or removes a user's Model.
- apiGroups: [serin.dev]
  resources: [models]
  verbs: [get, list, watch, patch]
# Model status: phase, conditions, canary step and analysis results are written to the status
# subresource (kopf patches it; update is the conflict-checked write with a resourceVersion).
- apiGroups: [serin.dev]
  resources: [models/status]
  verbs: [get, patch, update]
# InferenceServices: one per Model, owned by it. The operator creates it, moves
# canaryTrafficPercent and the predictor's storageUri at each step (patch; update where a
# resourceVersion precondition is needed), and deletes one whose first version never became
# stable. Deleting a Model removes its InferenceService through the owner reference instead.
- apiGroups: [serving.kserve.io]
  resources: [inferenceservices]
  verbs: [get, list, watch, create, patch, update, delete]
# Conversion Jobs: one per Model generation, watched to completion, deleted when superseded
# (their Pods follow through the Job's owner reference).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# The conversion Pod's termination message carries the parity summary (report.json in brief).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Fallback when the termination message is missing or truncated: read the report from the log.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# Events on Models (conversion passed/failed, step advanced, promoted, rolled back), which kopf
# writes through core/v1. patch aggregates repeats of an Event into a count instead of new objects.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
# The same Events through events.k8s.io/v1, for Kubernetes clients that record with the newer API.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* Cluster-scoped reads, needed in both modes. */}}
{{- define "serin.clusterReadRules" -}}
# kopf checks that the CRDs of the resources it serves exist and are established before watching.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
{{- end -}}
