{{/* ClusterIP Service; the port is named "http" and carries /metrics as well. */}}
{{- define "medrobotics-lib.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "medrobotics-lib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type }}
  sessionAffinity: None
  ports:
    - name: http
      port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
  selector:
    {{- include "medrobotics-lib.selectorLabels" . | nindent 4 }}
{{- end }}

{{/* ServiceAccount; the IRSA role ARN becomes the eks.amazonaws.com/role-arn annotation. */}}
{{- define "medrobotics-lib.serviceaccount" -}}
{{- if .Values.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "medrobotics-lib.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
  {{- if or .Values.serviceAccount.roleArn .Values.serviceAccount.annotations }}
  annotations:
    {{- with .Values.serviceAccount.roleArn }}
    eks.amazonaws.com/role-arn: {{ . | quote }}
    {{- end }}
    {{- with .Values.serviceAccount.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
automountServiceAccountToken: {{ .Values.serviceAccount.automount }}
{{- end }}
{{- end }}
