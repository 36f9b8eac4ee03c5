{{/*
The operator's rules: one list, used by the ClusterRole in cluster-wide mode and by the
per-namespace Role in namespaced mode. These are exactly the API calls the operator makes (kopf's
watch, serin.operator.kube, .jobs and .leader), nothing more: each rule says which call needs it.
tests/packaging proves them with `kubectl auth can-i` and by running the operator as this
ServiceAccount through whole rollouts. Add a rule only with the call that needs it and a test.
*/}}
{{- define "serin.namespacedRules" -}}
# Models. list + watch: kopf's watch stream, which fills the operator's watch cache and wakes a
# reconcile on every change. get: re-reads a Model after a Conflict (the resourceVersion sent with
# every status write guards it), when the cache was behind. patch: removes
# the one-shot serin.dev/promote and serin.dev/abort annotations once acted upon. No create,
# update or delete: the operator never replaces or removes a user's Model.
- apiGroups: [serin.dev]
  resources: [models]
  verbs: [get, list, watch, patch]
# Model status: the rollout's whole state (phase, versions, step, measurements, conditions) is one
# merge patch carrying the resourceVersion read, so two writers can never interleave.
- apiGroups: [serin.dev]
  resources: [models/status]
  verbs: [patch]
# The InferenceService and the conversion Job are owned by their Model with blockOwnerDeletion, so
# deleting a Model removes them (garbage collection). Clusters that enforce owner-reference
# permissions (admission plugin OwnerReferencesPermissionEnforcement: OpenShift, hardened clusters,
# and Serin's test apiserver) demand update on the owner's finalizers to set it. The operator
# never adds a finalizer.
- apiGroups: [serin.dev]
  resources: [models/finalizers]
  verbs: [update]
# InferenceServices: listed and watched into the cache for KServe's status (traffic, revisions,
# readiness), created for a Model's first version, patched at every step (canaryTrafficPercent or
# spec.canary, storageUri). Never deleted by the operator: the owner reference does that.
- apiGroups: [serving.kserve.io]
  resources: [inferenceservices]
  verbs: [list, watch, create, patch]
# Standard mode: the predictor Deployments KServe makes (those with its InferenceService label),
# listed and watched into the cache, are where the operator reads what really runs (the model on
# each Pod template, ready replicas, rollout done). Read only.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch]
# Standard mode without a Gateway: the Model's Service over all its predictor Pods (the canary's
# share is its ready-replica ratio), created once, watched (Serin's label), patched to note the
# canary written into spec.canary. Owned by the Model.
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
{{- if .Values.gateway.name }}
# Standard mode with a Gateway: the Model's HTTPRoute with weighted backendRefs to the stable and
# canary predictor Services, created once and patched at every weight change. Owned by the Model.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [list, watch, create, patch]
# The predictor Services' EndpointSlices (KServe's label): a canary gets weight on the route only
# once its endpoints are published, so the Gateway never holds a share with nowhere to send it.
# Read only.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
{{- end }}
# Secrets: each Model's feedback key (the key its predictors sign prediction ids with), created
# once before its first InferenceService, owned by the Model. Create only: the operator never
# reads (but serin-notify, below), lists or changes a Secret; the predictors read theirs through their env (secretKeyRef).
# A create that finds one of that name (an earlier Model's of the same name, not yet garbage
# collected) cannot tell whose it is, so the first deployment waits for it to go. get would tell
# (by its owner reference) but would also let the operator read every Secret where it watches.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
# One Secret read, by name: serin-notify, where a namespace keeps the signing keys and secret URLs
# (Slack's carries its token) of its notification sinks (spec.notify). resourceNames limits get to
# that name; no other Secret can be read, and none listed.
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [serin-notify]
  verbs: [get]
# Conversion Jobs (executor "job"): created per version, read for their Failed condition, deleted
# when superseded or past their timeout (the Pod follows by owner reference), listed (converter
# label) by the conversion queue to count those running against its limit.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, create, delete]
# Pods, read only. list: the conversion Pod, found by its job-name label (its termination message
# carries the report). list + watch: the predictor Pods (KServe's InferenceService label) into the
# cache while a rollout waits on them, so Kubernetes' reasons they do not serve (Unschedulable,
# ImagePullBackOff, CrashLoopBackOff, OOMKilled) reach the Model's status as they happen.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Events on Models (conversion passed or failed, step advanced, promoted, rolled back), posted by
# the operator and by kopf (handler errors) through core/v1.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
