{{/*
Naming and labelling helpers, shaped like the `helm create` scaffold. Each service chart
wraps these under its own names (`api-service.fullname`, ...) in its _helpers.tpl.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "medrobotics-lib.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (63 characters at most: some Kubernetes name fields are limited
to this by the DNS naming spec). If the release name contains the chart name it is used
as the full name.
*/}}
{{- define "medrobotics-lib.fullname" -}}
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

{{/* Chart name and version, as used by the helm.sh/chart label. */}}
{{- define "medrobotics-lib.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name and instance only, so they never change after the first install. */}}
{{- define "medrobotics-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ include "medrobotics-lib.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The recommended app.kubernetes.io labels, carried by every object. */}}
{{- define "medrobotics-lib.labels" -}}
helm.sh/chart: {{ include "medrobotics-lib.chart" . }}
{{ include "medrobotics-lib.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/component: {{ .Values.component | quote }}
app.kubernetes.io/part-of: medrobotics
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Name of the service account the pods use. */}}
{{- define "medrobotics-lib.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "medrobotics-lib.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Container image reference: repository:tag, or repository@digest when a digest is set. */}}
{{- define "medrobotics-lib.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the database credentials. */}}
{{- define "medrobotics-lib.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.externalSecret.enabled }}
{{- printf "%s-db" (include "medrobotics-lib.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the API keys file: auth.existingSecret, else the one the chart's
ExternalSecret creates (<fullname>-api-keys), else empty (the chart refuses to render while
auth.enabled is true). The chart never creates key material from values.
*/}}
{{- define "medrobotics-lib.authSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if .Values.auth.externalSecret.enabled }}
{{- printf "%s-api-keys" (include "medrobotics-lib.fullname" .) }}
{{- end }}
{{- end }}

{{/* Where the service reads its keys (APP_AUTH__KEYS_FILE): the Secret volume's keys.json. */}}
{{- define "medrobotics-lib.authKeysFile" -}}
{{- printf "%s/keys.json" (trimSuffix "/" .Values.auth.mountPath) }}
{{- end }}

{{/*
Pods the service can run at once: the HPA ceiling (or the fixed replica count) plus the
rolling-update surge. maxSurge may be an integer or a percentage (rounded up, as the
Deployment controller does).
*/}}
{{- define "medrobotics-lib.maxPods" -}}
{{- $replicas := int (ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled) }}
{{- $surge := .Values.strategy.maxSurge }}
{{- if kindIs "string" $surge }}
{{- $pct := int (trimSuffix "%" $surge) }}
{{- $surge = div (add (mul $replicas $pct) 99) 100 }}
{{- end }}
{{- add $replicas (int $surge) }}
{{- end }}

{{/*
The RDS CA bundle (database.caBundle.configMap): where it is mounted, its volume and mount.
Mounted without subPath, so a changed ConfigMap reaches running pods (new connections use it).
*/}}
{{- define "medrobotics-lib.caBundleDir" -}}/etc/medrobotics/db-ca{{- end }}
{{- define "medrobotics-lib.caBundleVolume" -}}
{{- with .Values.database.caBundle.configMap }}
- name: db-ca
  configMap:
    name: {{ . }}
    items:
      - key: {{ $.Values.database.caBundle.key }}
        path: {{ $.Values.database.caBundle.key }}
{{- end }}
{{- end }}
{{- define "medrobotics-lib.caBundleMount" -}}
{{- if .Values.database.caBundle.configMap }}
- name: db-ca
  mountPath: {{ include "medrobotics-lib.caBundleDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Cluster Autoscaler: the pod's emptyDir volumes (scratch only) may be lost on scale-down.
Without this annotation a node running any pod with an emptyDir is never removed while the
autoscaler runs with skip-nodes-with-local-storage.
*/}}
{{- define "medrobotics-lib.evictableLocalVolumes" -}}
{{- $names := list -}}
{{- if .Values.tmpVolume.enabled }}{{ $names = append $names "tmp" }}{{ end -}}
{{- range .Values.extraVolumes }}{{ if hasKey . "emptyDir" }}{{ $names = append $names .name }}{{ end }}{{ end -}}
{{- if $names }}
cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes: {{ join "," $names | quote }}
{{- end }}
{{- end }}
