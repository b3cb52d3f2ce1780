{{/*
The scaffold's helper names for this chart. The definitions live in the medrobotics-lib
library chart, shared with data-ingestion.
*/}}
{{- define "api-service.name" -}}
{{ include "medrobotics-lib.name" . }}
{{- end }}

{{- define "api-service.fullname" -}}
{{ include "medrobotics-lib.fullname" . }}
{{- end }}

{{- define "api-service.chart" -}}
{{ include "medrobotics-lib.chart" . }}
{{- end }}

{{- define "api-service.labels" -}}
{{ include "medrobotics-lib.labels" . }}
{{- end }}

{{- define "api-service.selectorLabels" -}}
{{ include "medrobotics-lib.selectorLabels" . }}
{{- end }}

{{- define "api-service.serviceAccountName" -}}
{{ include "medrobotics-lib.serviceAccountName" . }}
{{- end }}
