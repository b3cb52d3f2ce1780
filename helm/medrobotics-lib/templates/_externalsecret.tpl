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
