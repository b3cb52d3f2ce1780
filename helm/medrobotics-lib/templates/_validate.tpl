{{/*
Render-time guards: combinations that values.schema.json cannot express. Each failure is
one line naming the values to change. Include once per chart (templates/validate.yaml).
*/}}
{{- define "medrobotics-lib.validate" -}}
{{- $fullname := include "medrobotics-lib.fullname" . -}}
{{- $db := .Values.database -}}

{{- /* Credentials: the services must never fall back to their embedded database in a cluster. */ -}}
{{- if and (not $db.existingSecret) (not .Values.externalSecret.enabled) }}
{{- fail (printf "%s: database credentials are required: set database.existingSecret to the name of a Secret holding the keys in database.secretKeys, or set externalSecret.enabled=true to sync one from AWS Secrets Manager" $fullname) }}
{{- end }}
{{- if and (not $db.host) (not $db.secretKeys.databaseUrl) }}
{{- fail (printf "%s: database.host (RDS_HOST) is required, or set database.secretKeys.databaseUrl to read DATABASE_URL from the Secret" $fullname) }}
{{- end }}
{{- if and (not $db.secretKeys.password) (not $db.secretKeys.databaseUrl) }}
{{- fail (printf "%s: database.secretKeys.password (RDS_PASSWORD) or database.secretKeys.databaseUrl (DATABASE_URL) must name a key of the Secret" $fullname) }}
{{- end }}

{{- if and (has $db.sslMode (list "verify-ca" "verify-full")) (not $db.sslRootCert) }}
{{- fail (printf "%s: database.sslMode %s verifies the server certificate: set database.sslRootCert to the RDS CA bundle mounted through extraVolumes/extraVolumeMounts" $fullname $db.sslMode) }}
{{- end }}

{{- /* Connection budget: every pod that can exist at once holds a full pool plus the one
connection its readiness check keeps. */ -}}
{{- $maxPods := int (include "medrobotics-lib.maxPods" .) }}
{{- $needed := mul $maxPods (add (int $db.maxConnections) 1) }}
{{- if gt $needed (int $db.connectionBudget) }}
{{- fail (printf "%s: database connection budget exceeded: %d pods at most (%s + maxSurge %v) x (database.maxConnections %d + 1 for readiness) = %d connections > database.connectionBudget %d. Lower database.maxConnections or the replica ceiling, or raise database.connectionBudget if RDS max_connections allows it (see docs/operations.md, 'Database connections')" $fullname $maxPods (ternary (printf "autoscaling.maxReplicas %d" (int .Values.autoscaling.maxReplicas)) (printf "replicaCount %d" (int .Values.replicaCount)) .Values.autoscaling.enabled) .Values.strategy.maxSurge (int $db.maxConnections) $needed (int $db.connectionBudget)) }}
{{- end }}

{{- /* Graceful shutdown must fit inside the grace period, or the kubelet kills in-flight work. */ -}}
{{- $drain := add (int .Values.server.drainDelaySeconds) (int .Values.server.shutdownTimeoutSeconds) }}
{{- if le (int .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "%s: terminationGracePeriodSeconds (%d) must exceed server.drainDelaySeconds + server.shutdownTimeoutSeconds (%d)" $fullname (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}

{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "%s: autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)" $fullname (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail (printf "%s: autoscaling is enabled without a signal: set autoscaling.targetCPUUtilizationPercentage and/or autoscaling.targetMemoryUtilizationPercentage" $fullname) }}
{{- end }}

{{- /* /metrics is internal: the ingress may route only the service's own prefix. */ -}}
{{- if .Values.ingress.enabled }}
{{- $path := .Values.ingress.path }}
{{- if or (eq $path "/") (hasPrefix "/metrics" $path) (contains "metrics" $path) }}
{{- fail (printf "%s: ingress.path %q would expose /metrics through the load balancer; route only the service prefix (/api or /ingest)" $fullname $path) }}
{{- end }}
{{- end }}

{{- if and (eq .Values.storage.sse "aws:kms") (not .Values.storage.kmsKeyId) }}
{{- fail (printf "%s: storage.sse is aws:kms but storage.kmsKeyId is empty" $fullname) }}
{{- end }}
{{- if not .Values.storage.rawBucket }}
{{- fail (printf "%s: storage.rawBucket (S3_RAW_BUCKET) is required" $fullname) }}
{{- end }}
{{- end }}
