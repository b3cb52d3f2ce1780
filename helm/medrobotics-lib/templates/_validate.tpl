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

{{- /* API keys: on unless explicitly disabled, and then only from a Secret (never from values). */ -}}
{{- $auth := .Values.auth }}
{{- if and $auth.enabled (not (include "medrobotics-lib.authSecretName" .)) }}
{{- fail (printf "%s: API keys are required (auth.enabled is true): set auth.existingSecret to the name of a Secret whose key %q (auth.secretKey) holds the keys file, a JSON array of {name, scopes, sha256} entries made with `%s create-key`, or set auth.externalSecret.enabled=true to sync it from AWS Secrets Manager; only auth.enabled=false runs without authentication (docs/operations.md, 'API keys')" $fullname $auth.secretKey .Chart.Name) }}
{{- end }}
{{- if and $auth.enabled .Values.tmpVolume.enabled (eq (trimSuffix "/" $auth.mountPath) "/tmp") }}
{{- fail (printf "%s: auth.mountPath must not be /tmp (the tmp volume is mounted there)" $fullname) }}
{{- end }}

{{- /* The ConfigMap and literal env values never carry secrets, and authentication is set only
through auth.*: a stray APP_AUTH__ENABLED=false in config.extra or extraEnv would switch it off
behind the chart's back. */ -}}
{{- $secretName := "(?i)(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|API_KEY|DATABASE_URL)" }}
{{- $vals := deepCopy .Values }}
{{- $_ := set $vals.config "extra" (dict) }}
{{- $managed := include "medrobotics-lib.configData" (dict "Values" $vals) | fromYaml }}
{{- range $k, $v := .Values.config.extra }}
{{- if hasPrefix "APP_AUTH__" $k }}
{{- fail (printf "%s: config.extra.%s: authentication is configured with the auth values (auth.enabled, auth.existingSecret, auth.rateLimit, auth.reloadSeconds), not config.extra" $fullname $k) }}
{{- end }}
{{- if regexMatch $secretName $k }}
{{- fail (printf "%s: config.extra.%s looks like a secret, and config.extra goes into a ConfigMap: read it from a Secret instead (extraEnv with valueFrom.secretKeyRef)" $fullname $k) }}
{{- end }}
{{- if hasKey $managed $k }}
{{- fail (printf "%s: config.extra.%s is set by the chart from its own value; change that value instead of overriding it" $fullname $k) }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if hasPrefix "APP_AUTH__" .name }}
{{- fail (printf "%s: extraEnv %s: authentication is configured with the auth values (auth.enabled, auth.existingSecret, auth.rateLimit, auth.reloadSeconds), not extraEnv" $fullname .name) }}
{{- end }}
{{- if and (regexMatch $secretName .name) (hasKey . "value") }}
{{- fail (printf "%s: extraEnv %s has a literal value but looks like a secret: use valueFrom.secretKeyRef" $fullname .name) }}
{{- end }}
{{- end }}

{{- if and (has $db.sslMode (list "verify-ca" "verify-full")) (not $db.sslRootCert) (not $db.caBundle.configMap) }}
{{- fail (printf "%s: database.sslMode %s verifies the server certificate: set database.caBundle.configMap to the ConfigMap holding the RDS CA bundle (deploy.sh: RDS_CA_BUNDLE), or database.sslRootCert to a bundle inside the image" $fullname $db.sslMode) }}
{{- end }}
{{- if and .Values.externalSecret.enabled (not .Values.externalSecret.remoteKey) }}
{{- fail (printf "%s: externalSecret.remoteKey is required: the full ARN of the RDS credentials secret (the one the cluster stack's DatabaseSecretArn lets the External Secrets role read)" $fullname) }}
{{- end }}
{{- if and .Values.auth.enabled .Values.auth.externalSecret.enabled (not .Values.auth.externalSecret.remoteKey) }}
{{- fail (printf "%s: auth.externalSecret.remoteKey is required: the full ARN of the API keys secret (the cluster stack's ApiKeysSecretArn)" $fullname) }}
{{- end }}

{{- /* Connection budget: every pod that can exist at once holds a full pool plus the one
connection its readiness check keeps. */ -}}
{{- $maxPods := int (include "medrobotics-lib.maxPods" .) }}
{{- $needed := mul $maxPods (add (int $db.maxConnections) 1) }}
{{- if gt $needed (int $db.connectionBudget) }}
{{- fail (printf "%s: database connection budget exceeded: %d pods at most (%s + maxSurge %v) x (database.maxConnections %d + 1 for readiness) = %d connections > database.connectionBudget %d. Lower database.maxConnections or the replica ceiling, or raise database.connectionBudget if RDS max_connections allows it (see docs/operations.md, 'Database connections')" $fullname $maxPods (ternary (printf "autoscaling.maxReplicas %d" (int .Values.autoscaling.maxReplicas)) (printf "replicaCount %d" (int .Values.replicaCount)) .Values.autoscaling.enabled) .Values.strategy.maxSurge (int $db.maxConnections) $needed (int $db.connectionBudget)) }}
{{- end }}

{{- /* Graceful shutdown must fit inside the grace period, or the kubelet kills in-flight work:
after SIGTERM the pod serves for the drain delay, then finishes in-flight requests and, in
data-ingestion, the final flush of pending telemetry, all bounded by the shutdown timeout. */ -}}
{{- $drainDelay := int .Values.server.drainDelaySeconds }}
{{- $shutdownTimeout := int .Values.server.shutdownTimeoutSeconds }}
{{- $shutdown := add $drainDelay $shutdownTimeout }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if le $grace $shutdown }}
{{- fail (printf "%s: terminationGracePeriodSeconds (%d) must exceed server.drainDelaySeconds + server.shutdownTimeoutSeconds (%d + %d = %d): after SIGTERM the pod serves for the drain delay, then finishes in-flight requests and the final flush of pending telemetry within the shutdown timeout, and the kubelet kills it when the grace period ends. Raise terminationGracePeriodSeconds above %d or lower the other two" $fullname $grace $drainDelay $shutdownTimeout $shutdown $shutdown) }}
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
{{- /* Listener, TLS and WAF annotations come from the ingress values; a copy in
ingress.annotations would be a duplicate key that silently wins or breaks the manifest. */ -}}
{{- $owned := list "group.name" "group.order" "scheme" "target-type" "healthcheck-path" "healthcheck-port" "healthcheck-interval-seconds" "healthcheck-timeout-seconds" "healthy-threshold-count" "unhealthy-threshold-count" "success-codes" "target-group-attributes" "certificate-arn" "listen-ports" "ssl-redirect" "ssl-policy" "wafv2-acl-arn" }}
{{- range $k, $_ := .Values.ingress.annotations }}
{{- if has (trimPrefix "alb.ingress.kubernetes.io/" $k) $owned }}
{{- if hasPrefix "alb.ingress.kubernetes.io/" $k }}
{{- fail (printf "%s: ingress.annotations.%s is set by the chart: use the ingress values (certificateArn, sslPolicy, wafAclArn, scheme, healthCheck, ...) instead" $fullname $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- if and (eq .Values.storage.sse "aws:kms") (not .Values.storage.kmsKeyId) }}
{{- fail (printf "%s: storage.sse is aws:kms but storage.kmsKeyId is empty" $fullname) }}
{{- end }}
{{- if not .Values.storage.rawBucket }}
{{- fail (printf "%s: storage.rawBucket (S3_RAW_BUCKET) is required" $fullname) }}
{{- end }}
{{- end }}
