{{/*
Deployment. Probes: startup and liveness on /health (process only, never the database),
readiness on /ready (database, object store; 503 from the first SIGTERM); probes and
/metrics need no API key. The API keys file is a read-only Secret volume. There is no
preStop hook: the image has no shell, and the service itself keeps serving for
server.drainDelaySeconds after SIGTERM while the ALB deregisters the pod.
*/}}
{{- define "medrobotics-lib.deployment" -}}
{{- $fullname := include "medrobotics-lib.fullname" . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: {{ .Values.revisionHistoryLimit }}
  selector:
    matchLabels:
      {{- include "medrobotics-lib.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {{ .Values.strategy.maxSurge }}
      maxUnavailable: {{ .Values.strategy.maxUnavailable }}
  template:
    metadata:
      annotations:
        checksum/config: {{ include "medrobotics-lib.configData" . | sha256sum }}
        {{- include "medrobotics-lib.evictableLocalVolumes" . | nindent 8 }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "medrobotics-lib.labels" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      serviceAccountName: {{ include "medrobotics-lib.serviceAccountName" . }}
      # IRSA injects its own projected web-identity token; the Kubernetes API token is not needed.
      automountServiceAccountToken: {{ .Values.serviceAccount.automount }}
      enableServiceLinks: false
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
      {{- if .Values.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: {{ .Values.topologySpread.maxSkew }}
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: {{ .Values.topologySpread.zoneWhenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "medrobotics-lib.selectorLabels" . | nindent 14 }}
        - maxSkew: {{ .Values.topologySpread.maxSkew }}
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: {{ .Values.topologySpread.nodeWhenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "medrobotics-lib.selectorLabels" . | nindent 14 }}
      {{- end }}
      containers:
        - name: {{ .Chart.Name }}
          image: {{ include "medrobotics-lib.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ .Values.containerPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ $fullname }}
            {{- with .Values.extraEnvFrom }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            {{- include "medrobotics-lib.secretEnv" . | trim | nindent 12 }}
            {{- with .Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            {{- include "medrobotics-lib.probe" .Values.probes.startup | nindent 12 }}
          livenessProbe:
            {{- include "medrobotics-lib.probe" .Values.probes.liveness | nindent 12 }}
          readinessProbe:
            {{- include "medrobotics-lib.probe" .Values.probes.readiness | nindent 12 }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          {{- if or .Values.tmpVolume.enabled .Values.auth.enabled .Values.extraVolumeMounts .Values.database.caBundle.configMap }}
          volumeMounts:
            {{- include "medrobotics-lib.caBundleMount" . | nindent 12 }}
            {{- if .Values.tmpVolume.enabled }}
            - name: tmp
              mountPath: /tmp
            {{- end }}
            {{- if .Values.auth.enabled }}
            # The API keys file (APP_AUTH__KEYS_FILE), without subPath so that the kubelet
            # refreshes it when the Secret changes and the service re-reads it (rotation).
            - name: api-keys
              mountPath: {{ .Values.auth.mountPath }}
              readOnly: true
            {{- end }}
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
      {{- if or .Values.tmpVolume.enabled .Values.auth.enabled .Values.extraVolumes .Values.database.caBundle.configMap }}
      volumes:
        {{- include "medrobotics-lib.caBundleVolume" . | nindent 8 }}
        {{- if .Values.tmpVolume.enabled }}
        - name: tmp
          emptyDir:
            sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
        {{- end }}
        {{- if .Values.auth.enabled }}
        - name: api-keys
          secret:
            secretName: {{ include "medrobotics-lib.authSecretName" . }}
            items:
              - key: {{ .Values.auth.secretKey }}
                path: keys.json
            # Read-only for the pod's group (fsGroup), nobody else.
            defaultMode: 0440
        {{- end }}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* One HTTP probe on the named port, from a values block {path, initialDelaySeconds, ...}. */}}
{{- define "medrobotics-lib.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
initialDelaySeconds: {{ .initialDelaySeconds }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
successThreshold: {{ .successThreshold }}
failureThreshold: {{ .failureThreshold }}
{{- end }}
