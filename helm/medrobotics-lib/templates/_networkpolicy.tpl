{{/*
NetworkPolicy for the service's pods. Selecting the pods for both directions makes
everything not listed here denied (k8s/namespace also holds a namespace-wide default
deny). Allowed in: the ALB (target-type ip, so from the VPC's addresses) and helm test
pods on the service port; Prometheus on the same port (/metrics). Allowed out: DNS,
PostgreSQL, and HTTPS (S3 through the VPC gateway endpoint, STS for IRSA).
Needs a network-policy engine: the VPC CNI's (enableNetworkPolicy, set in the cluster
template) or Calico/Cilium.
*/}}
{{- define "medrobotics-lib.networkpolicy" -}}
{{- if .Values.networkPolicy.enabled -}}
{{- $np := .Values.networkPolicy -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "medrobotics-lib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "medrobotics-lib.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "medrobotics-lib.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
  ingress:
    # Load balancer targets and in-cluster clients of the Service.
    - from:
        {{- range $np.ingressCidrs }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
        - podSelector:
            matchLabels:
              app.kubernetes.io/instance: {{ .Release.Name }}
              app.kubernetes.io/component: helm-test
      ports:
        - port: http
          protocol: TCP
    # Prometheus scrapes /metrics on the service port.
    - from:
        - namespaceSelector:
            matchLabels:
              {{- toYaml $np.prometheus.namespaceLabels | nindent 14 }}
          podSelector:
            matchLabels:
              {{- toYaml $np.prometheus.podLabels | nindent 14 }}
      ports:
        - port: http
          protocol: TCP
    {{- with $np.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  egress:
    # Cluster DNS.
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
    # PostgreSQL (RDS in the VPC's private subnets).
    - to:
        {{- range $np.databaseCidrs }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
      ports:
        - port: {{ .Values.database.port }}
          protocol: TCP
    # HTTPS: S3 (gateway endpoint or public), STS (IRSA web identity), KMS.
    - to:
        {{- range $np.httpsCidrs }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
      ports:
        - port: 443
          protocol: TCP
    {{- with $np.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}
