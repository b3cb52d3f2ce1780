{{/*
ExternalSecret (External Secrets Operator, external-secrets.io/v1) that copies the RDS
credentials from AWS Secrets Manager into the Secret the pods read. It is a pre-install /
pre-upgrade hook so that it exists before the migration Job; the Secret it creates is
orphaned (creationPolicy Orphan) so re-creating the hook on upgrade never deletes the
credentials of running pods. The SecretStore it names is platform-owned
(k8s/overlays/external-secrets, deploy/deploy.sh).
*/}}
{{- define "medrobotics-lib.externalsecret" -}}
{{- if .Values.externalSecret.enabled -}}
{{- $es := .Values.externalSecret -}}
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: {{ include "medrobotics-lib.databaseSecretName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-10"
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  refreshInterval: {{ $es.refreshInterval }}
  secretStoreRef:
    name: {{ $es.secretStoreRef.name }}
    kind: {{ $es.secretStoreRef.kind }}
  target:
    name: {{ include "medrobotics-lib.databaseSecretName" . }}
    creationPolicy: Orphan
    deletionPolicy: Retain
  dataFrom:
    # The RDS secret's JSON keys (username, password, host, port, dbname) become Secret keys.
    - extract:
        key: {{ $es.remoteKey }}
{{- end }}
{{- end }}

{{/*
ExternalSecret for the API keys file: the Secrets Manager secret's whole string (the JSON
array of {name, scopes, sha256} entries) becomes key auth.secretKey of the Secret the pods
mount. A regular release object (nothing reads it before the Deployment; a pod waits for its
volume until the first sync). It refreshes every auth.externalSecret.refreshInterval, then
the kubelet updates the mounted file and the service re-reads it: rotation needs no restart.
*/}}
{{- define "medrobotics-lib.authExternalSecret" -}}
{{- if and .Values.auth.enabled .Values.auth.externalSecret.enabled -}}
{{- $es := .Values.auth.externalSecret -}}
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: {{ include "medrobotics-lib.authSecretName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
spec:
  refreshInterval: {{ $es.refreshInterval }}
  secretStoreRef:
    name: {{ $es.secretStoreRef.name }}
    kind: {{ $es.secretStoreRef.kind }}
  target:
    name: {{ include "medrobotics-lib.authSecretName" . }}
    creationPolicy: Owner
    deletionPolicy: Retain
  data:
    - secretKey: {{ .Values.auth.secretKey }}
      remoteRef:
        key: {{ $es.remoteKey }}
{{- end }}
{{- end }}
