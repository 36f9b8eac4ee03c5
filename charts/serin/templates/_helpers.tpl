{{/* Chart name, overridable. */}}
{{- define "serin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, or the release name when it already contains the chart name.
Cluster-scoped objects (ClusterRoles, bindings) carry it, so two releases never collide. */}}
{{- define "serin.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "serin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "serin.labels" -}}
helm.sh/chart: {{ include "serin.chart" . }}
app.kubernetes.io/name: {{ include "serin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: serin
{{- end -}}

{{/* Selector labels of the operator Pods (immutable in a Deployment: never add to them). */}}
{{- define "serin.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "serin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* image reference: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "serin.image" -}}
{{- $img := index . 0 -}}
{{- $ctx := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $ctx.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespaced mode when watchNamespaces is a non-empty list. */}}
{{- define "serin.namespaced" -}}
{{- if .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* Namespaces that get the conversion ServiceAccount: the release namespace, every watched one, and the listed ones. */}}
{{- define "serin.converterNamespaces" -}}
{{- $all := list .Release.Namespace -}}
{{- range .Values.watchNamespaces -}}{{- $all = append $all . -}}{{- end -}}
{{- range .Values.conversion.serviceAccount.namespaces -}}{{- $all = append $all . -}}{{- end -}}
{{- $all | uniq | toJson -}}
{{- end -}}

{{/* The ClusterStorageContainer predictors fetch the S3 model store with (cluster-scoped: named
after the release, so that two releases never share one). */}}
{{- define "serin.storeContainer" -}}
{{- printf "%s-model-store" (include "serin.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The S3 model stores, current and former, comma-separated (empty: none): while any is in use
the ClusterStorageContainer fetches from it, with conversion.modelStoreS3's settings. */}}
{{- define "serin.s3Stores" -}}
{{- $stores := list -}}
{{- range (prepend .Values.conversion.formerModelStores .Values.conversion.modelStore) -}}
{{- if hasPrefix "s3://" . -}}{{- $stores = append $stores (trimSuffix "/" .) -}}{{- end -}}
{{- end -}}
{{- join "," $stores -}}
{{- end -}}

{{/* The runtime image: servingRuntime.image when set, else the ServingRuntime manifest's. */}}
{{- define "serin.runtimeImage" -}}
{{- if .Values.servingRuntime.image.repository -}}
{{- include "serin.image" (list .Values.servingRuntime.image .) -}}
{{- else -}}
{{- $rt := .Files.Get "files/manifests/serving-runtime/serin-onnx.yaml" | fromYaml -}}
{{- range $c := $rt.spec.containers -}}{{- if eq $c.name "kserve-container" -}}{{- $c.image -}}{{- end -}}{{- end -}}
{{- end -}}
{{- end -}}
