{{/*
The scaffold's helper names for this chart. The definitions live in the medrobotics-lib
library chart, shared with data-ingestion.
*/}}
{{- define "data-ingestion.name" -}}
{{ include "medrobotics-lib.name" . }}
{{- end }}

{{- define "data-ingestion.fullname" -}}
{{ include "medrobotics-lib.fullname" . }}
{{- end }}

{{- define "data-ingestion.chart" -}}
{{ include "medrobotics-lib.chart" . }}
{{- end }}

{{- define "data-ingestion.labels" -}}
{{ include "medrobotics-lib.labels" . }}
{{- end }}

{{- define "data-ingestion.selectorLabels" -}}
{{ include "medrobotics-lib.selectorLabels" . }}
{{- end }}

{{- define "data-ingestion.serviceAccountName" -}}
{{ include "medrobotics-lib.serviceAccountName" . }}
{{- end }}
