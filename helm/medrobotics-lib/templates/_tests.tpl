{{/*
`helm test`: a curl pod (the service image has no shell or HTTP client) that checks the
Service answers liveness, readiness, the prefixed health route and /metrics. A hook
NetworkPolicy lets it reach the service through the namespace's default deny.
*/}}
{{- define "medrobotics-lib.tests" -}}
{{- if .Values.tests.enabled -}}
{{- $fullname := include "medrobotics-lib.fullname" . -}}
{{- $base := printf "http://%s:%d" $fullname (int .Values.service.port) -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $fullname }}-test
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-weight: "-5"
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  podSelector:
    matchLabels:
      {{- include "medrobotics-lib.testSelectorLabels" . | nindent 6 }}
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
        - podSelector:
            matchLabels:
              {{- include "medrobotics-lib.selectorLabels" . | nindent 14 }}
      ports:
        - port: {{ .Values.containerPort }}
          protocol: TCP
---
apiVersion: v1
kind: Pod
metadata:
  name: {{ $fullname }}-test
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.testSelectorLabels" . | nindent 4 }}
    app.kubernetes.io/part-of: medrobotics
    app.kubernetes.io/managed-by: {{ .Release.Service }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ .Values.tests.runAsUser }}
    runAsGroup: {{ .Values.tests.runAsUser }}
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: smoke
      image: {{ printf "%s:%s" .Values.tests.image.repository .Values.tests.image.tag | quote }}
      imagePullPolicy: IfNotPresent
      args:
        - --fail
        - --fail-early
        - --silent
        - --show-error
        - --max-time
        - "5"
        - --retry
        - "5"
        - --retry-connrefused
        {{- range .Values.tests.paths }}
        - {{ printf "%s%s" $base . | quote }}
        {{- end }}
      resources:
        requests:
          cpu: 10m
          memory: 16Mi
        limits:
          cpu: 100m
          memory: 32Mi
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        capabilities:
          drop:
            - ALL
{{- end }}
{{- end }}

{{/* Labels of the helm test pod: not selected by the Service, allowed in by its NetworkPolicy. */}}
{{- define "medrobotics-lib.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "medrobotics-lib.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
{{- end }}
