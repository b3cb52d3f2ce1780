{{/*
Database migration Job: `<binary> migrate` as a pre-install/pre-upgrade hook, so a release
only rolls out once its schema is in place. It runs before the release's ConfigMap and
ServiceAccount exist, so it carries its environment inline and uses the namespace's default
service account without a token. Its pods are labelled so that neither the Service nor the
PodDisruptionBudget selects them. Kept on failure (for `kubectl logs`), deleted on success.
*/}}
{{- define "medrobotics-lib.migrationjob" -}}
{{- if .Values.migrations.enabled -}}
{{- $fullname := include "medrobotics-lib.fullname" . -}}
{{- $m := .Values.migrations -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $fullname }}-migrate
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-5"
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  podSelector:
    matchLabels:
      {{- include "medrobotics-lib.migrationSelectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
  egress:
    - to:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: kube-system
          podSelector:
            matchLabels:
              k8s-app: kube-dns
      ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    - to:
        {{- range .Values.networkPolicy.databaseCidrs }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
      ports:
        - port: {{ .Values.database.port }}
          protocol: TCP
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ $fullname }}-migrate
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: {{ $m.backoffLimit }}
  activeDeadlineSeconds: {{ $m.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: {{ $m.ttlSecondsAfterFinished }}
  template:
    metadata:
      labels:
        {{- include "medrobotics-lib.migrationSelectorLabels" . | nindent 8 }}
        app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
        app.kubernetes.io/part-of: medrobotics
        app.kubernetes.io/managed-by: {{ .Release.Service }}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      containers:
        - name: migrate
          image: {{ include "medrobotics-lib.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args:
            {{- toYaml $m.args | nindent 12 }}
          env:
            {{- range $k, $v := (include "medrobotics-lib.configData" . | fromYaml) }}
            - name: {{ $k }}
              value: {{ $v | quote }}
            {{- end }}
            {{- include "medrobotics-lib.secretEnv" . | trim | nindent 12 }}
            {{- with .Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          resources:
            {{- toYaml $m.resources | nindent 12 }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          {{- if or .Values.tmpVolume.enabled .Values.database.caBundle.configMap }}
          volumeMounts:
            {{- include "medrobotics-lib.caBundleMount" . | nindent 12 }}
            {{- if .Values.tmpVolume.enabled }}
            - name: tmp
              mountPath: /tmp
            {{- end }}
          {{- end }}
      {{- if or .Values.tmpVolume.enabled .Values.database.caBundle.configMap }}
      volumes:
        {{- include "medrobotics-lib.caBundleVolume" . | nindent 8 }}
        {{- if .Values.tmpVolume.enabled }}
        - name: tmp
          emptyDir:
            sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
        {{- end }}
      {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end }}

{{/* Labels of the migration pods: a distinct name, so no Service or PDB selects them. */}}
{{- define "medrobotics-lib.migrationSelectorLabels" -}}
app.kubernetes.io/name: {{ include "medrobotics-lib.name" . }}-migrate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: migration
{{- end }}
