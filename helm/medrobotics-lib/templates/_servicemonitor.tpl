{{/*
ServiceMonitor for the Prometheus Operator (kube-prometheus-stack selects it by the
`release: prometheus` label). Not gated on .Capabilities: install the operator's CRDs
first (deploy/deploy.sh does) or set serviceMonitor.enabled=false.
*/}}
{{- define "medrobotics-lib.servicemonitor" -}}
{{- if .Values.serviceMonitor.enabled -}}
{{- $sm := .Values.serviceMonitor -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "medrobotics-lib.fullname" . }}
  namespace: {{ default .Release.Namespace $sm.namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  jobLabel: app.kubernetes.io/name
  namespaceSelector:
    matchNames:
      - {{ .Release.Namespace }}
  selector:
    matchLabels:
      {{- include "medrobotics-lib.selectorLabels" . | nindent 6 }}
  endpoints:
    - port: http
      path: {{ $sm.path }}
      scheme: http
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
      honorLabels: false
      {{- with $sm.relabelings }}
      relabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $sm.metricRelabelings }}
      metricRelabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end }}
