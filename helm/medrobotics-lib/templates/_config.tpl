{{/*
The service environment (README.md "Configuration reference"). configData is a YAML map of
variable name -> string, and never holds a secret (the render refuses secret-looking names
in config.extra; tests/deploy/test_secrets.py scans every rendering). The ConfigMap, the
checksum/config annotation and the migration Job (which runs before the ConfigMap exists)
all read it, so they cannot disagree.
Unset optional values are left out so the service's built-in defaults apply.
*/}}
{{- define "medrobotics-lib.configData" -}}
{{- $db := .Values.database -}}
{{- $data := dict
  "PORT" (toString .Values.containerPort)
  "RDS_PORT" (toString $db.port)
  "RDS_DBNAME" $db.name
  "APP_DATABASE__SSL_MODE" $db.sslMode
  "APP_DATABASE__MAX_CONNECTIONS" (toString $db.maxConnections)
  "APP_DATABASE__ACQUIRE_TIMEOUT_MS" (toString $db.acquireTimeoutMs)
  "APP_DATABASE__STATEMENT_TIMEOUT_MS" (toString $db.statementTimeoutMs)
  "APP_DATABASE__MIGRATE_ON_START" "false"
  "S3_RAW_BUCKET" .Values.storage.rawBucket
  "AWS_REGION" .Values.storage.region
  "APP_STORAGE__SSE" .Values.storage.sse
  "APP_LOG__FORMAT" .Values.config.logFormat
  "RUST_LOG" .Values.config.rustLog
  "APP_SERVER__DRAIN_DELAY_SECS" (toString .Values.server.drainDelaySeconds)
  "APP_SERVER__SHUTDOWN_TIMEOUT_SECS" (toString .Values.server.shutdownTimeoutSeconds)
-}}
{{- with $db.host }}{{ $_ := set $data "RDS_HOST" . }}{{ end }}
{{- if and $db.user (not $db.secretKeys.username) }}{{ $_ := set $data "RDS_USER" $db.user }}{{ end }}
{{- with $db.sslRootCert }}{{ $_ := set $data "APP_DATABASE__SSL_ROOT_CERT" . }}{{ end }}
{{- with $db.caBundle.configMap }}{{ $_ := set $data "APP_DATABASE__SSL_ROOT_CERT" (printf "%s/%s" (include "medrobotics-lib.caBundleDir" $) $db.caBundle.key) }}{{ end }}
{{- with .Values.storage.kmsKeyId }}{{ $_ := set $data "APP_STORAGE__KMS_KEY_ID" . }}{{ end }}
{{- with .Values.ingest }}
{{- if not (kindIs "invalid" .groupWindowMs) }}{{ $_ := set $data "APP_INGEST__GROUP_WINDOW_MS" (toString .groupWindowMs) }}{{ end }}
{{- if not (kindIs "invalid" .groupMaxRecords) }}{{ $_ := set $data "APP_INGEST__GROUP_MAX_RECORDS" (toString .groupMaxRecords) }}{{ end }}
{{- if not (kindIs "invalid" .groupMaxBytes) }}{{ $_ := set $data "APP_INGEST__GROUP_MAX_BYTES" (toString .groupMaxBytes) }}{{ end }}
{{- if not (kindIs "invalid" .maxPendingBytes) }}{{ $_ := set $data "APP_INGEST__MAX_PENDING_BYTES" (toString .maxPendingBytes) }}{{ end }}
{{- if not (kindIs "invalid" .idempotencyTtlSecs) }}{{ $_ := set $data "APP_INGEST__IDEMPOTENCY_TTL_SECS" (toString .idempotencyTtlSecs) }}{{ end }}
{{- end }}
{{- /* API keys: the keys file comes from the Secret volume (never from a value); off only
when auth.enabled is false, which the service logs at startup and NOTES.txt warns about. */ -}}
{{- $auth := .Values.auth }}
{{- if $auth.enabled }}
{{- $_ := set $data "APP_AUTH__ENABLED" "true" }}
{{- $_ := set $data "APP_AUTH__KEYS_FILE" (include "medrobotics-lib.authKeysFile" .) }}
{{- $_ := set $data "APP_AUTH__RELOAD_SECS" (toString $auth.reloadSeconds) }}
{{- $_ := set $data "APP_AUTH__RATE_LIMIT_PER_SEC" (toString $auth.rateLimit.perSecond) }}
{{- $_ := set $data "APP_AUTH__RATE_LIMIT_BURST" (toString $auth.rateLimit.burst) }}
{{- else }}
{{- $_ := set $data "APP_AUTH__ENABLED" "false" }}
{{- end }}
{{- range $k, $v := .Values.config.extra }}{{ $_ := set $data $k (toString $v) }}{{ end }}
{{- toYaml $data }}
{{- end }}

{{/* ConfigMap object. */}}
{{- define "medrobotics-lib.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "medrobotics-lib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
data:
  {{- range $k, $v := (include "medrobotics-lib.configData" . | fromYaml) }}
  {{ $k }}: {{ $v | quote }}
  {{- end }}
{{- end }}

{{/*
Secret-backed variables (env entries): RDS_PASSWORD, and optionally RDS_USER and
DATABASE_URL (which wins over the RDS_* parts) from the credentials Secret.
*/}}
{{- define "medrobotics-lib.secretEnv" -}}
{{- $secret := include "medrobotics-lib.databaseSecretName" . -}}
{{- $keys := .Values.database.secretKeys -}}
{{- if $keys.username }}
- name: RDS_USER
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.username }}
{{- end }}
{{- if $keys.password }}
- name: RDS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.password }}
{{- end }}
{{- if $keys.databaseUrl }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.databaseUrl }}
{{- end }}
{{- end }}
