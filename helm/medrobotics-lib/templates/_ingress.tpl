{{/*
ALB Ingress for the service's own prefix. Both charts join one IngressGroup, so the AWS
Load Balancer Controller builds a single internet-facing ALB with /api and /ingest rules;
anything else (including /metrics) gets the ALB's default 404. With ingress.certificateArn
the ALB serves HTTPS on 443 (ingress.sslPolicy) and redirects 80 there; without it, HTTP only.
ingress.wafAclArn attaches a WAFv2 web ACL. Certificate, TLS policy and ACL apply to the
whole shared ALB: give both charts the same values.
*/}}
{{- define "medrobotics-lib.ingress" -}}
{{- if .Values.ingress.enabled -}}
{{- $ing := .Values.ingress -}}
{{- $hc := $ing.healthCheck -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ include "medrobotics-lib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
  annotations:
    alb.ingress.kubernetes.io/group.name: {{ $ing.groupName | quote }}
    alb.ingress.kubernetes.io/group.order: {{ $ing.groupOrder | quote }}
    alb.ingress.kubernetes.io/scheme: {{ $ing.scheme | quote }}
    alb.ingress.kubernetes.io/target-type: {{ $ing.targetType | quote }}
    alb.ingress.kubernetes.io/healthcheck-path: {{ $hc.path | quote }}
    alb.ingress.kubernetes.io/healthcheck-port: "traffic-port"
    alb.ingress.kubernetes.io/healthcheck-interval-seconds: {{ $hc.intervalSeconds | quote }}
    alb.ingress.kubernetes.io/healthcheck-timeout-seconds: {{ $hc.timeoutSeconds | quote }}
    alb.ingress.kubernetes.io/healthy-threshold-count: {{ $hc.healthyThreshold | quote }}
    alb.ingress.kubernetes.io/unhealthy-threshold-count: {{ $hc.unhealthyThreshold | quote }}
    alb.ingress.kubernetes.io/success-codes: "200"
    alb.ingress.kubernetes.io/target-group-attributes: {{ printf "deregistration_delay.timeout_seconds=%d" (int $ing.deregistrationDelaySeconds) | quote }}
    {{- if $ing.certificateArn }}
    alb.ingress.kubernetes.io/certificate-arn: {{ $ing.certificateArn | quote }}
    alb.ingress.kubernetes.io/listen-ports: '[{"HTTP": 80}, {"HTTPS": 443}]'
    alb.ingress.kubernetes.io/ssl-redirect: "443"
    alb.ingress.kubernetes.io/ssl-policy: {{ $ing.sslPolicy | quote }}
    {{- else }}
    alb.ingress.kubernetes.io/listen-ports: '[{"HTTP": 80}]'
    {{- end }}
    {{- with $ing.wafAclArn }}
    alb.ingress.kubernetes.io/wafv2-acl-arn: {{ . | quote }}
    {{- end }}
    {{- with $ing.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  ingressClassName: {{ $ing.className }}
  rules:
    - {{- with $ing.host }}
      host: {{ . | quote }}
      {{- end }}
      http:
        paths:
          - path: {{ $ing.path }}
            pathType: {{ $ing.pathType }}
            backend:
              service:
                name: {{ include "medrobotics-lib.fullname" . }}
                port:
                  name: http
{{- end }}
{{- end }}
