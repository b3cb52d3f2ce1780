{{/* NOTES.txt body shared by the service charts. */}}
{{- define "medrobotics-lib.notes" -}}
{{- $fullname := include "medrobotics-lib.fullname" . -}}
{{ .Chart.Name }} {{ .Chart.AppVersion }} is {{ if .Release.IsInstall }}installed{{ else }}upgraded{{ end }} as release "{{ .Release.Name }}" in namespace "{{ .Release.Namespace }}".

1. Watch the rollout (the migration Job, if any, already ran as a pre-{{ if .Release.IsInstall }}install{{ else }}upgrade{{ end }} hook):
     kubectl -n {{ .Release.Namespace }} rollout status deployment/{{ $fullname }}
     kubectl -n {{ .Release.Namespace }} get pods -l app.kubernetes.io/instance={{ .Release.Name }}
{{- if .Values.autoscaling.enabled }}
     kubectl -n {{ .Release.Namespace }} get hpa {{ $fullname }}    # TARGETS must not show <unknown>
{{- end }}

2. Reach it:
{{- if .Values.ingress.enabled }}
{{- $scheme := ternary "https" "http" (not (empty .Values.ingress.certificateArn)) }}
     kubectl -n {{ .Release.Namespace }} get ingress {{ $fullname }} -o jsonpath='{.status.loadBalancer.ingress[0].hostname}'
     curl {{ $scheme }}://{{ default "<that address>" .Values.ingress.host }}{{ .Values.ingress.path }}/health
{{- if .Values.auth.enabled }}
     curl -H "Authorization: Bearer $KEY" {{ $scheme }}://{{ default "<that address>" .Values.ingress.host }}{{ .Values.ingress.path }}/...
{{- end }}
   (ALB group "{{ .Values.ingress.groupName }}", path {{ .Values.ingress.path }}; /metrics is not routed;
   {{ if .Values.ingress.certificateArn }}HTTPS on 443 with {{ .Values.ingress.sslPolicy }}, HTTP redirected{{ else }}HTTP only: no ingress.certificateArn{{ end }}{{ if .Values.ingress.wafAclArn }}; WAF ACL attached{{ end }}.)
{{- else }}
     kubectl -n {{ .Release.Namespace }} port-forward svc/{{ $fullname }} {{ .Values.service.port }}:{{ .Values.service.port }}
     curl http://127.0.0.1:{{ .Values.service.port }}/health
{{- end }}

3. Smoke-test the release:
     helm test {{ .Release.Name }} -n {{ .Release.Namespace }}

Database: {{ if .Values.database.secretKeys.databaseUrl }}DATABASE_URL{{ else }}{{ .Values.database.host }}:{{ .Values.database.port }}/{{ .Values.database.name }} (sslmode {{ .Values.database.sslMode }}){{ end }} with credentials from Secret "{{ include "medrobotics-lib.databaseSecretName" . }}"{{ if .Values.externalSecret.enabled }} (synced by ExternalSecret from "{{ .Values.externalSecret.remoteKey }}"){{ end }}.
Connections: ({{ .Values.database.maxConnections }} pool + 1 readiness) per pod x {{ include "medrobotics-lib.maxPods" . }} pods at most = {{ mul (add (int .Values.database.maxConnections) 1) (int (include "medrobotics-lib.maxPods" .)) }} of a budget of {{ .Values.database.connectionBudget }}.
{{- if .Values.auth.enabled }}

API keys: required on every route but the probes, /metrics and the OpenAPI document.
  Secret "{{ include "medrobotics-lib.authSecretName" . }}", key "{{ .Values.auth.secretKey }}"{{ if .Values.auth.externalSecret.enabled }} (synced by ExternalSecret from "{{ .Values.auth.externalSecret.remoteKey }}"){{ end }},
  mounted at {{ include "medrobotics-lib.authKeysFile" . }}, re-read every {{ .Values.auth.reloadSeconds }} s; {{ .Values.auth.rateLimit.perSecond }} requests/s (burst {{ .Values.auth.rateLimit.burst }}) per key and pod.
  New key: {{ .Chart.Name }} create-key --name <client> --scope {{ ternary "ingest" "read" (eq .Chart.Name "data-ingestion") }}; rotation: docs/operations.md, "API keys".
{{- end }}
{{- if not .Values.auth.enabled }}

WARNING: auth.enabled is false: API key authentication is OFF, and anyone who can reach the
service{{ if .Values.ingress.enabled }} (through the {{ .Values.ingress.scheme }} ALB){{ end }} can call every route. Turn it back on with
auth.enabled=true and auth.existingSecret (docs/operations.md, "API keys").
{{- else if and .Values.ingress.enabled (not .Values.ingress.certificateArn) (eq .Values.ingress.scheme "internet-facing") }}

WARNING: the internet-facing ALB has no certificate: API keys cross the internet in clear text.
Set ingress.certificateArn (an ACM certificate) to serve HTTPS and redirect HTTP.
{{- end }}
{{- if not .Values.serviceAccount.roleArn }}

WARNING: serviceAccount.roleArn is empty: the pods get no IAM role and S3 calls will be denied.
{{- end }}
{{- end }}
