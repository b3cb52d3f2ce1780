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
     kubectl -n {{ .Release.Namespace }} get ingress {{ $fullname }} -o jsonpath='{.status.loadBalancer.ingress[0].hostname}'
     curl http://<that address>{{ .Values.ingress.path }}/health
   (ALB group "{{ .Values.ingress.groupName }}", path {{ .Values.ingress.path }}; /metrics is not routed.)
{{- else }}
     kubectl -n {{ .Release.Namespace }} port-forward svc/{{ $fullname }} {{ .Values.service.port }}:{{ .Values.service.port }}
     curl http://127.0.0.1:{{ .Values.service.port }}/health
{{- end }}

3. Smoke-test the release:
     helm test {{ .Release.Name }} -n {{ .Release.Namespace }}

Database: {{ if .Values.database.secretKeys.databaseUrl }}DATABASE_URL{{ else }}{{ .Values.database.host }}:{{ .Values.database.port }}/{{ .Values.database.name }} (sslmode {{ .Values.database.sslMode }}){{ end }} with credentials from Secret "{{ include "medrobotics-lib.databaseSecretName" . }}"{{ if .Values.externalSecret.enabled }} (synced by ExternalSecret from "{{ .Values.externalSecret.remoteKey }}"){{ end }}.
Connections: ({{ .Values.database.maxConnections }} pool + 1 readiness) per pod x {{ include "medrobotics-lib.maxPods" . }} pods at most = {{ mul (add (int .Values.database.maxConnections) 1) (int (include "medrobotics-lib.maxPods" .)) }} of a budget of {{ .Values.database.connectionBudget }}.
{{- if not .Values.serviceAccount.roleArn }}

WARNING: serviceAccount.roleArn is empty: the pods get no IAM role and S3 calls will be denied.
{{- end }}
{{- end }}
