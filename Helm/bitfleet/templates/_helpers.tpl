{{/*
Chart name, truncated to 63 characters (the DNS-1123 label limit).
*/}}
{{- define "bitfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: release name plus chart name unless the release name already contains it.
*/}}
{{- define "bitfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Full name plus a suffix, the whole kept within 63 characters (Service and Job names are DNS labels).
Usage: include "bitfleet.suffixedName" (list . "metrics")
*/}}
{{- define "bitfleet.suffixedName" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "bitfleet.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "bitfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable across upgrades (never include the version here).
*/}}
{{- define "bitfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bitfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels for every object the chart creates.
*/}}
{{- define "bitfleet.labels" -}}
helm.sh/chart: {{ include "bitfleet.chart" . }}
{{ include "bitfleet.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bitfleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Worker component labels (selector + component).
*/}}
{{- define "bitfleet.workerSelectorLabels" -}}
{{ include "bitfleet.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "bitfleet.workerLabels" -}}
{{ include "bitfleet.labels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Service account name.
*/}}
{{- define "bitfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bitfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository:tag, or repository:tag@digest when a digest is pinned.
The tag defaults to the chart's appVersion; "latest" is refused.
*/}}
{{- define "bitfleet.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must pin a version: \"latest\" is not allowed" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the worker's database URL, and the key inside it.
*/}}
{{- define "bitfleet.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- include "bitfleet.suffixedName" (list . "database") }}
{{- end }}
{{- end }}

{{- define "bitfleet.databaseSecretKey" -}}
{{- default "DATABASE_URL" .Values.database.existingSecretKey }}
{{- end }}

{{/*
Secret used by the migrations hook Job: migrations.database.existingSecret, or a hook Secret made from
migrations.database.url (the chart's own Secrets do not exist yet at pre-install time). Migrations run as
the schema owner: never with the worker's credentials (bitfleet.validate refuses that).
*/}}
{{- define "bitfleet.migrationsSecretName" -}}
{{- if .Values.migrations.database.existingSecret }}
{{- .Values.migrations.database.existingSecret }}
{{- else }}
{{- include "bitfleet.suffixedName" (list . "migrations") }}
{{- end }}
{{- end }}

{{- define "bitfleet.migrationsSecretKey" -}}
{{- if .Values.migrations.database.existingSecret }}
{{- default "DATABASE_URL" .Values.migrations.database.existingSecretKey }}
{{- else }}
{{- "DATABASE_URL" }}
{{- end }}
{{- end }}

{{/* True ("true") when the chart must render a hook Secret for the migrations Job. */}}
{{- define "bitfleet.migrationsNeedsHookSecret" -}}
{{- if and (not .Values.migrations.database.existingSecret) .Values.migrations.database.url -}}
true
{{- end }}
{{- end }}

{{/*
Secret KEDA reads the connection string from (it may be a read-only role's URL).
*/}}
{{- define "bitfleet.kedaSecretName" -}}
{{- default (include "bitfleet.databaseSecretName" .) .Values.keda.connectionSecret.name }}
{{- end }}

{{- define "bitfleet.kedaSecretKey" -}}
{{- if .Values.keda.connectionSecret.name }}
{{- default "DATABASE_URL" .Values.keda.connectionSecret.key }}
{{- else }}
{{- include "bitfleet.databaseSecretKey" . }}
{{- end }}
{{- end }}

{{/*
Seconds the pod may take to stop: preStop sleep + worker grace period + a margin for the
last transaction. An explicit value must leave at least that much.
*/}}
{{- define "bitfleet.terminationGracePeriodSeconds" -}}
{{- $pre := 0 }}
{{- if .Values.worker.preStop.enabled }}{{ $pre = int .Values.worker.preStop.sleepSeconds }}{{ end }}
{{- $need := add $pre (int .Values.worker.gracePeriodSeconds) | int }}
{{- if .Values.worker.terminationGracePeriodSeconds }}
{{- if le (int .Values.worker.terminationGracePeriodSeconds) $need }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must exceed preStop sleep + worker.gracePeriodSeconds (%d)" (int .Values.worker.terminationGracePeriodSeconds) $need) }}
{{- end }}
{{- .Values.worker.terminationGracePeriodSeconds }}
{{- else }}
{{- add $need 15 }}
{{- end }}
{{- end }}

{{/*
Refuse contradictory autoscaling: KEDA creates its own HPA, so the chart's CPU HPA must be off.
*/}}
{{- define "bitfleet.validate" -}}
{{- if and .Values.keda.enabled .Values.hpa.enabled }}
{{- fail "keda.enabled and hpa.enabled are mutually exclusive: KEDA manages its own HorizontalPodAutoscaler" }}
{{- end }}
{{- if and (not .Values.database.existingSecret) (not .Values.database.url) }}
{{- fail "set database.url or database.existingSecret (a Secret with a libpq DATABASE_URL)" }}
{{- end }}
{{- if and .Values.database.existingSecret .Values.database.url }}
{{- fail "set only one of database.url and database.existingSecret" }}
{{- end }}
{{- if .Values.migrations.enabled }}
{{- $m := .Values.migrations.database }}
{{- if and (not $m.existingSecret) (not $m.url) }}
{{- fail "migrations run as the schema owner, not with the worker's credentials: set migrations.database.url or migrations.database.existingSecret (or migrations.enabled=false and run `bitfleet migrate` as the owner yourself)" }}
{{- end }}
{{- if and $m.existingSecret $m.url }}
{{- fail "set only one of migrations.database.url and migrations.database.existingSecret" }}
{{- end }}
{{- if and $m.url (eq $m.url .Values.database.url) }}
{{- fail "migrations.database.url is the worker's database.url: migrations need the schema owner's credentials, the worker must not have them" }}
{{- end }}
{{- if and $m.existingSecret (eq $m.existingSecret .Values.database.existingSecret) (eq (default "DATABASE_URL" $m.existingSecretKey) (default "DATABASE_URL" .Values.database.existingSecretKey)) }}
{{- fail "migrations.database.existingSecret/existingSecretKey is the worker's database Secret: migrations need the schema owner's credentials, the worker must not have them" }}
{{- end }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- fail "keda.minReplicaCount must not exceed keda.maxReplicaCount" }}
{{- end }}
{{- if and .Values.hpa.enabled (gt (int .Values.hpa.minReplicas) (int .Values.hpa.maxReplicas)) }}
{{- fail "hpa.minReplicas must not exceed hpa.maxReplicas" }}
{{- end }}
{{- if and .Values.hpa.enabled (not (dig "requests" "cpu" "" .Values.worker.resources)) }}
{{- fail "hpa.enabled needs worker.resources.requests.cpu (CPU utilisation is relative to the request)" }}
{{- end }}
{{- if and (eq .Values.models.source "persistentVolumeClaim") (not .Values.models.persistentVolumeClaim.claimName) }}
{{- fail "models.source=persistentVolumeClaim needs models.persistentVolumeClaim.claimName" }}
{{- end }}
{{- if and (eq .Values.models.source "hostPath") (not .Values.models.hostPath.path) }}
{{- fail "models.source=hostPath needs models.hostPath.path" }}
{{- end }}
{{- end }}
